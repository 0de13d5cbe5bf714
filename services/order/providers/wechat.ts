import crypto, { KeyObject } from "node:crypto";
import fs from "node:fs";
import type { Config } from "../../../config";
import {
	NotifyEvent,
	NotifyHeaders,
	NotifyRefused,
	PaymentProvider,
	Prepay,
	ProviderError,
	ProviderRefund,
	ProviderTransaction
} from "../../../lib/domain/payment";
import { aesGcmDecrypt, authorization, rfc3339Cst, signatureProblem } from "../../../lib/domain/wechat-pay";

type WechatConfig = Config["pay"]["wechat"];

/** How long one provider call may take. */
const CALL_TIMEOUT_MS = 5000;
/** WeChat's Native code_url is valid for 2 hours at most. */
const CODE_URL_LIFETIME_MS = 2 * 3600 * 1000;

/**
 * WeChat Pay API v3, Native pay: every request signed with the merchant key, every answer's
 * signature checked with the platform key, notifies verified and decrypted with the APIv3 key.
 * No secret (key, signature, ciphertext) ever goes into an error message or a log line.
 */
export class WechatPay implements PaymentProvider {
	readonly name = "wechat" as const;
	private readonly key: KeyObject;
	private readonly platformKey: KeyObject;

	constructor(private readonly cfg: WechatConfig) {
		if (!cfg.mchid || !cfg.appid || !cfg.serial_no || !cfg.base_url || !cfg.notify_url)
			throw new Error("pay.wechat: base_url, mchid, appid, serial_no and notify_url are required");
		if (Buffer.byteLength(cfg.apiv3_key, "utf8") !== 32) throw new Error("pay.wechat.apiv3_key must be 32 bytes");
		this.key = crypto.createPrivateKey(fs.readFileSync(cfg.private_key_path));
		// A PEM public key or the platform certificate: either gives the public key.
		this.platformKey = crypto.createPublicKey(fs.readFileSync(cfg.platform_public_key_path));
	}

	isOurs(t: Pick<ProviderTransaction, "mchid" | "appid">): boolean {
		return t.mchid === this.cfg.mchid && t.appid === this.cfg.appid;
	}

	async prepay(p: { out_trade_no: string; description: string; total: number; expires_at: Date }): Promise<Prepay> {
		const expires = new Date(Math.min(p.expires_at.getTime(), Date.now() + CODE_URL_LIFETIME_MS));
		// Whole seconds: the provider's time_expire has no fraction.
		expires.setMilliseconds(0);
		const { body } = await this.call("POST", "/v3/pay/transactions/native", {
			appid: this.cfg.appid,
			mchid: this.cfg.mchid,
			description: p.description.slice(0, 127) || "GoMall order",
			out_trade_no: p.out_trade_no,
			time_expire: rfc3339Cst(expires),
			notify_url: this.cfg.notify_url,
			amount: { total: p.total, currency: "CNY" }
		});
		if (typeof body?.code_url !== "string")
			throw new ProviderError(502, "BAD_ANSWER", "prepay answer without code_url");
		return { code_url: body.code_url, expires_at: expires };
	}

	async query(no: string): Promise<ProviderTransaction> {
		try {
			const { body } = await this.call(
				"GET",
				`/v3/pay/transactions/out-trade-no/${encodeURIComponent(no)}?mchid=${encodeURIComponent(this.cfg.mchid)}`
			);
			return toTransaction(body);
		} catch (err) {
			if (err instanceof ProviderError && err.code === "ORDER_NOT_EXIST")
				return {
					mchid: this.cfg.mchid,
					appid: this.cfg.appid,
					out_trade_no: no,
					transaction_id: "",
					trade_state: "NOTEXIST",
					total: 0
				};
			throw err;
		}
	}

	async close(no: string): Promise<void> {
		await this.call("POST", `/v3/pay/transactions/out-trade-no/${encodeURIComponent(no)}/close`, {
			mchid: this.cfg.mchid
		});
	}

	async refund(r: {
		out_trade_no: string;
		out_refund_no: string;
		total: number;
		refund: number;
		reason: string;
	}): Promise<ProviderRefund> {
		const { body } = await this.call("POST", "/v3/refund/domestic/refunds", {
			out_trade_no: r.out_trade_no,
			out_refund_no: r.out_refund_no,
			reason: r.reason,
			notify_url: this.cfg.notify_url,
			amount: { refund: r.refund, total: r.total, currency: "CNY" }
		});
		return toRefund({ mchid: this.cfg.mchid, ...body });
	}

	parseNotify(headers: NotifyHeaders, raw: Buffer, nowMs = Date.now()): NotifyEvent {
		const problem = signatureProblem(
			{
				timestamp: headers["wechatpay-timestamp"],
				nonce: headers["wechatpay-nonce"],
				signature: headers["wechatpay-signature"],
				serial: headers["wechatpay-serial"]
			},
			raw,
			this.platformKey,
			nowMs,
			this.cfg.platform_serial
		);
		if (problem) throw new NotifyRefused(problem, 401);
		let notify: any;
		try {
			notify = JSON.parse(raw.toString("utf8"));
		} catch {
			throw new NotifyRefused("body is not JSON");
		}
		const resource = notify?.resource;
		if (typeof notify?.id !== "string" || typeof notify?.event_type !== "string" || typeof resource !== "object")
			throw new NotifyRefused("not a notify");
		let plain: any;
		try {
			plain = JSON.parse(aesGcmDecrypt(resource, this.cfg.apiv3_key));
		} catch {
			throw new NotifyRefused("resource does not decrypt");
		}
		if (notify.event_type === "TRANSACTION.SUCCESS" || resource.original_type === "transaction") {
			const transaction = toTransaction(plain);
			if (!this.isOurs(transaction)) throw new NotifyRefused("mchid or appid is not ours");
			return { kind: "transaction", id: notify.id, transaction };
		}
		if (String(notify.event_type).startsWith("REFUND.") || resource.original_type === "refund") {
			const refund = toRefund(plain);
			if (refund.mchid !== this.cfg.mchid) throw new NotifyRefused("mchid is not ours");
			return { kind: "refund", id: notify.id, refund };
		}
		throw new NotifyRefused(`unknown event_type ${String(notify.event_type).slice(0, 40)}`);
	}

	/** One signed call; the answer's signature is checked before its body is believed. */
	private async call(method: "GET" | "POST", url: string, payload?: unknown): Promise<{ status: number; body: any }> {
		const text = payload === undefined ? "" : JSON.stringify(payload);
		const headers: Record<string, string> = {
			Accept: "application/json",
			"User-Agent": "gomall",
			Authorization: authorization(
				{ mchid: this.cfg.mchid, serial_no: this.cfg.serial_no, key: this.key },
				method,
				url,
				text
			)
		};
		if (payload !== undefined) headers["Content-Type"] = "application/json";
		let res: Response;
		let raw: Buffer;
		try {
			res = await fetch(this.cfg.base_url.replace(/\/$/, "") + url, {
				method,
				headers,
				body: payload === undefined ? undefined : text,
				signal: AbortSignal.timeout(CALL_TIMEOUT_MS)
			});
			raw = Buffer.from(await res.arrayBuffer());
		} catch (err) {
			throw new ProviderError(0, "UNREACHABLE", `WeChat Pay ${method} ${url.split("?")[0]}: ${(err as Error).name}`);
		}
		const problem = signatureProblem(
			{
				timestamp: res.headers.get("wechatpay-timestamp") ?? undefined,
				nonce: res.headers.get("wechatpay-nonce") ?? undefined,
				signature: res.headers.get("wechatpay-signature") ?? undefined,
				serial: res.headers.get("wechatpay-serial") ?? undefined
			},
			raw,
			this.platformKey,
			Date.now(),
			this.cfg.platform_serial
		);
		if (problem) throw new ProviderError(502, "BAD_SIGNATURE", `WeChat Pay answer refused: ${problem}`);
		let body: any = null;
		if (raw.length) {
			try {
				body = JSON.parse(raw.toString("utf8"));
			} catch {
				throw new ProviderError(502, "BAD_ANSWER", "WeChat Pay answer is not JSON");
			}
		}
		if (!res.ok)
			throw new ProviderError(
				res.status,
				typeof body?.code === "string" ? body.code : "HTTP_" + res.status,
				`WeChat Pay ${method} ${url.split("?")[0]}: ${res.status} ${typeof body?.code === "string" ? body.code : ""}`
			);
		return { status: res.status, body };
	}
}

function toTransaction(b: any): ProviderTransaction {
	return {
		mchid: String(b?.mchid ?? ""),
		appid: String(b?.appid ?? ""),
		out_trade_no: String(b?.out_trade_no ?? ""),
		transaction_id: String(b?.transaction_id ?? ""),
		trade_state: String(b?.trade_state ?? ""),
		total: Number(b?.amount?.total)
	};
}

function toRefund(b: any): ProviderRefund {
	return {
		mchid: String(b?.mchid ?? ""),
		out_trade_no: String(b?.out_trade_no ?? ""),
		out_refund_no: String(b?.out_refund_no ?? ""),
		refund_id: String(b?.refund_id ?? ""),
		status: String(b?.refund_status ?? b?.status ?? ""),
		refund: Number(b?.amount?.refund),
		total: Number(b?.amount?.total)
	};
}
