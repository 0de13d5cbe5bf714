/**
 * A WeChat Pay API v3 simulator (Native pay) for tests and local runs: the same routes
 * (prepay, query, close, refund), its own generated keys (the merchant's, the platform's, the
 * APIv3 key), every merchant request's signature verified, every answer and notify signed
 * and encrypted as the real provider does. Notifies follow the provider's retry schedule
 * (15s/15s/30s/3m/10m/20m/30m/30m/30m/60m/3h/3h/3h/6h/6h, multiplied by `retryScale`) until
 * they get a 2xx; a payment can also be reported never (the query path), twice, or late.
 *
 * Local run: `node dist/scripts/wechat-sim.js` prints the GOMALL_* variables for the mall;
 * `POST /sim/pay/<out_trade_no>` there is the buyer scanning the code and paying.
 */
import crypto, { KeyObject } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";

/** WeChat's notify retry schedule, in seconds after the previous attempt. */
export const NOTIFY_SCHEDULE_S = [
	0, 15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600
];

export interface SimTransaction {
	appid: string;
	mchid: string;
	out_trade_no: string;
	transaction_id: string;
	trade_state: string;
	trade_state_desc: string;
	description: string;
	time_expire: string;
	notify_url: string;
	code_url: string;
	amount: { total: number; payer_total: number; currency: string; payer_currency: string };
	success_time?: string;
}

export interface SimRefund {
	mchid: string;
	out_trade_no: string;
	transaction_id: string;
	out_refund_no: string;
	refund_id: string;
	refund_status: string;
	notify_url: string;
	amount: { total: number; refund: number; payer_total: number; payer_refund: number };
}

export interface BuiltNotify {
	headers: Record<string, string>;
	body: string;
}

export interface SimOptions {
	mchid?: string;
	appid?: string;
	/** multiplies the notify retry schedule: 0.001 makes 15 s into 15 ms */
	retryScale?: number;
	/** refunds are reported by notify (default) or never */
	refundNotify?: "auto" | "never";
}

function pem(k: KeyObject, type: "private" | "public"): string {
	return type === "private"
		? (k.export({ type: "pkcs8", format: "pem" }) as string)
		: (k.export({ type: "spki", format: "pem" }) as string);
}

function sign(message: Buffer | string, key: KeyObject): string {
	return crypto.sign("sha256", Buffer.from(message), key).toString("base64");
}

export class WechatSim {
	readonly mchid: string;
	readonly appid: string;
	readonly merchantSerial = crypto.randomBytes(20).toString("hex").toUpperCase();
	readonly platformSerial = crypto.randomBytes(20).toString("hex").toUpperCase();
	/** 32 ASCII characters, as the merchant sets it in the WeChat Pay console */
	readonly apiv3Key = crypto.randomBytes(16).toString("hex");
	readonly merchant = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
	readonly platform = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
	readonly transactions = new Map<string, SimTransaction>();
	readonly refunds = new Map<string, SimRefund>();
	/** every request the mall made: "POST /v3/refund/domestic/refunds" … */
	readonly calls: string[] = [];
	/** every notify attempt and the mall's answer */
	readonly deliveries: { id: string; status: number }[] = [];
	retryScale: number;
	refundNotify: "auto" | "never";
	/** set: every refund request is refused with this status and code (say, 403 USER_ACCOUNT_ABNORMAL) */
	refundRefusal: { status: number; code: string } | null = null;
	private server: http.Server | null = null;
	private readonly timers = new Set<NodeJS.Timeout>();
	baseUrl = "";

	constructor(opts: SimOptions = {}) {
		this.mchid = opts.mchid ?? "1900000109";
		this.appid = opts.appid ?? "wxd678efh567hg6787";
		this.retryScale = opts.retryScale ?? 1;
		this.refundNotify = opts.refundNotify ?? "auto";
	}

	async start(port = 0, host = "127.0.0.1"): Promise<string> {
		this.server = http.createServer((req, res) => {
			const chunks: Buffer[] = [];
			req.on("data", c => chunks.push(c));
			req.on("end", () => {
				try {
					this.handle(req, Buffer.concat(chunks), res);
				} catch (err) {
					this.answer(res, 500, { code: "SYSTEM_ERROR", message: (err as Error).message });
				}
			});
		});
		await new Promise<void>(resolve => this.server!.listen(port, host, resolve));
		this.baseUrl = `http://${host}:${(this.server.address() as AddressInfo).port}`;
		return this.baseUrl;
	}

	async stop(): Promise<void> {
		for (const t of this.timers) clearTimeout(t);
		this.timers.clear();
		if (!this.server) return;
		this.server.closeAllConnections();
		await new Promise(resolve => this.server!.close(resolve));
		this.server = null;
	}

	/** Writes the merchant's private key and the platform's public key for the mall to read. */
	writeKeys(dir: string): { private_key_path: string; platform_public_key_path: string } {
		fs.mkdirSync(dir, { recursive: true });
		const private_key_path = path.join(dir, "apiclient_key.pem");
		const platform_public_key_path = path.join(dir, "wechatpay_platform_public.pem");
		fs.writeFileSync(private_key_path, pem(this.merchant.privateKey, "private"), { mode: 0o600 });
		fs.writeFileSync(platform_public_key_path, pem(this.platform.publicKey, "public"));
		return { private_key_path, platform_public_key_path };
	}

	/** The mall's pay.wechat section for this simulator. */
	mallConfig(dir: string, notifyUrl: string) {
		return {
			base_url: this.baseUrl,
			mchid: this.mchid,
			appid: this.appid,
			serial_no: this.merchantSerial,
			platform_serial: this.platformSerial,
			apiv3_key: this.apiv3Key,
			notify_url: notifyUrl,
			...this.writeKeys(dir)
		};
	}

	/**
	 * The buyer scans the code and pays. `notify`: "auto" reports it on the retry schedule until
	 * the mall answers 2xx; "never" does not report it (the mall learns it by query).
	 * `force` pays even a closed or expired transaction.
	 */
	pay(
		outTradeNo: string,
		opts: { notify?: "auto" | "never"; force?: boolean } = {}
	): { tx: SimTransaction; delivered: Promise<boolean> } {
		const tx = this.transactions.get(outTradeNo);
		if (!tx) throw new Error(`no prepay for ${outTradeNo}`);
		// `force`: the provider's own race, a payment crossing its close (paid after the mall closed).
		if (!opts.force && tx.trade_state !== "NOTPAY") throw new Error(`transaction ${outTradeNo} is ${tx.trade_state}`);
		if (!opts.force && Date.parse(tx.time_expire) < Date.now()) throw new Error(`prepay ${outTradeNo} expired`);
		tx.trade_state = "SUCCESS";
		tx.trade_state_desc = "支付成功";
		tx.transaction_id =
			"4200" + crypto.randomInt(1e9, 1e10 - 1) + String(Date.now()).slice(-10) + crypto.randomInt(1000, 9999);
		tx.success_time = new Date().toISOString();
		const delivered = opts.notify === "never" ? Promise.resolve(false) : this.deliver(this.transactionNotify(tx));
		return { tx, delivered };
	}

	/** A payment notify for a transaction, optionally altered (the resource before encryption). */
	transactionNotify(
		tx: SimTransaction,
		alter: (resource: any) => void = () => undefined
	): BuiltNotify & { url: string } {
		const resource = structuredClone({
			appid: tx.appid,
			mchid: tx.mchid,
			out_trade_no: tx.out_trade_no,
			transaction_id: tx.transaction_id,
			trade_type: "NATIVE",
			trade_state: tx.trade_state === "REFUND" ? "SUCCESS" : tx.trade_state,
			trade_state_desc: tx.trade_state_desc,
			bank_type: "OTHERS",
			success_time: tx.success_time,
			payer: { openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o" },
			amount: tx.amount
		});
		alter(resource);
		return { url: tx.notify_url, ...this.buildNotify("TRANSACTION.SUCCESS", "transaction", resource) };
	}

	/** A notify as the provider builds it: the resource encrypted, the whole signed. */
	buildNotify(
		eventType: string,
		originalType: string,
		resource: unknown,
		opts: { signWith?: KeyObject; timestamp?: number; apiv3Key?: string; tamper?: boolean } = {}
	): BuiltNotify {
		const iv = crypto.randomBytes(6).toString("hex");
		const aad = originalType;
		const cipher = crypto.createCipheriv("aes-256-gcm", Buffer.from(opts.apiv3Key ?? this.apiv3Key), Buffer.from(iv));
		cipher.setAAD(Buffer.from(aad));
		const data = Buffer.concat([cipher.update(JSON.stringify(resource), "utf8"), cipher.final(), cipher.getAuthTag()]);
		if (opts.tamper) data[3] ^= 0x01;
		const body = JSON.stringify({
			id: crypto.randomUUID(),
			create_time: new Date().toISOString(),
			resource_type: "encrypt-resource",
			event_type: eventType,
			summary: "支付成功",
			resource: {
				original_type: originalType,
				algorithm: "AEAD_AES_256_GCM",
				ciphertext: data.toString("base64"),
				associated_data: aad,
				nonce: iv
			}
		});
		return { headers: this.signedHeaders(body, opts.signWith, opts.timestamp), body };
	}

	/** Sends one notify once; the mall's HTTP status (0: no answer). */
	async post(url: string, n: BuiltNotify): Promise<number> {
		try {
			const r = await fetch(url, {
				method: "POST",
				headers: { "Content-Type": "application/json", ...n.headers },
				body: n.body,
				signal: AbortSignal.timeout(5000)
			});
			await r.arrayBuffer();
			return r.status;
		} catch {
			return 0;
		}
	}

	/** Sends a notify on the retry schedule until a 2xx; false when the schedule ran out. */
	deliver(n: BuiltNotify & { url: string }): Promise<boolean> {
		const id = JSON.parse(n.body).id as string;
		return new Promise(resolve => {
			const attempt = (i: number) => {
				if (i >= NOTIFY_SCHEDULE_S.length) return resolve(false);
				const t = setTimeout(
					async () => {
						this.timers.delete(t);
						if (!this.server) return resolve(false);
						// Signed again at each attempt: the provider's timestamp is the attempt's.
						const fresh = { ...n, headers: this.signedHeaders(n.body) };
						const status = await this.post(n.url, fresh);
						this.deliveries.push({ id, status });
						if (status >= 200 && status < 300) resolve(true);
						else attempt(i + 1);
					},
					NOTIFY_SCHEDULE_S[i] * 1000 * this.retryScale
				);
				this.timers.add(t);
			};
			attempt(0);
		});
	}

	private signedHeaders(body: string, key: KeyObject = this.platform.privateKey, timestamp?: number) {
		const ts = String(timestamp ?? Math.floor(Date.now() / 1000));
		const nonce = crypto.randomBytes(16).toString("hex");
		return {
			"Wechatpay-Timestamp": ts,
			"Wechatpay-Nonce": nonce,
			"Wechatpay-Signature": sign(`${ts}\n${nonce}\n${body}\n`, key),
			"Wechatpay-Serial": this.platformSerial
		};
	}

	private answer(res: http.ServerResponse, status: number, body?: unknown): void {
		const text = body === undefined ? "" : JSON.stringify(body);
		const headers: Record<string, string> = this.signedHeaders(text);
		if (text) headers["Content-Type"] = "application/json";
		res.writeHead(status, headers);
		res.end(text);
	}

	/** Why a merchant request's Authorization is refused, or null. */
	private authProblem(req: http.IncomingMessage, body: Buffer): string | null {
		const h = req.headers.authorization ?? "";
		const schema = "WECHATPAY2-SHA256-RSA2048 ";
		if (!h.startsWith(schema)) return "Authorization schema";
		const f: Record<string, string> = {};
		for (const m of h.slice(schema.length).matchAll(/(\w+)="([^"]*)"/g)) f[m[1]] = m[2];
		if (f.mchid !== this.mchid) return "mchid";
		if (f.serial_no !== this.merchantSerial) return "serial_no";
		if (Math.abs(Date.now() / 1000 - Number(f.timestamp)) > 300) return "timestamp";
		const message = `${req.method}\n${req.url}\n${f.timestamp}\n${f.nonce_str}\n${body.toString("utf8")}\n`;
		const ok = crypto.verify(
			"sha256",
			Buffer.from(message),
			this.merchant.publicKey,
			Buffer.from(f.signature ?? "", "base64")
		);
		return ok ? null : "signature";
	}

	private handle(req: http.IncomingMessage, raw: Buffer, res: http.ServerResponse): void {
		const url = new URL(req.url ?? "/", "http://sim");
		const route = `${req.method} ${url.pathname}`;
		// The buyer's side for local runs: no merchant signature.
		const simPay = /^POST \/sim\/pay\/([0-9A-Za-z_-]+)$/.exec(route);
		if (simPay) {
			try {
				const { tx } = this.pay(simPay[1]);
				return this.answer(res, 200, { transaction_id: tx.transaction_id });
			} catch (err) {
				return this.answer(res, 400, { code: "INVALID_REQUEST", message: (err as Error).message });
			}
		}
		this.calls.push(route.replace(/out-trade-no\/[^/]+/, "out-trade-no/{no}"));
		const problem = this.authProblem(req, raw);
		if (problem) return this.answer(res, 401, { code: "SIGN_ERROR", message: `signature check failed: ${problem}` });
		const body = raw.length ? JSON.parse(raw.toString("utf8")) : {};
		let m: RegExpExecArray | null;
		if (route === "POST /v3/pay/transactions/native") return this.prepay(body, res);
		if ((m = /^GET \/v3\/pay\/transactions\/out-trade-no\/([^/]+)$/.exec(route))) {
			if (url.searchParams.get("mchid") !== this.mchid)
				return this.answer(res, 400, { code: "PARAM_ERROR", message: "mchid" });
			const tx = this.transactions.get(decodeURIComponent(m[1]));
			if (!tx) return this.answer(res, 404, { code: "ORDER_NOT_EXIST", message: "no such order" });
			const shown: Partial<SimTransaction> = { ...tx };
			delete shown.code_url;
			delete shown.notify_url;
			return this.answer(res, 200, shown);
		}
		if ((m = /^POST \/v3\/pay\/transactions\/out-trade-no\/([^/]+)\/close$/.exec(route))) {
			const tx = this.transactions.get(decodeURIComponent(m[1]));
			if (!tx) return this.answer(res, 404, { code: "ORDER_NOT_EXIST", message: "no such order" });
			if (tx.trade_state === "SUCCESS" || tx.trade_state === "REFUND")
				return this.answer(res, 400, { code: "ORDERPAID", message: "order paid" });
			tx.trade_state = "CLOSED";
			tx.trade_state_desc = "已关闭";
			return this.answer(res, 204);
		}
		if (route === "POST /v3/refund/domestic/refunds") return this.refund(body, res);
		this.answer(res, 404, { code: "NOT_FOUND", message: "no such route" });
	}

	private prepay(b: any, res: http.ServerResponse): void {
		if (b.appid !== this.appid || b.mchid !== this.mchid)
			return this.answer(res, 400, { code: "PARAM_ERROR", message: "appid/mchid" });
		if (typeof b.out_trade_no !== "string" || !/^[0-9A-Za-z_*-]{6,32}$/.test(b.out_trade_no))
			return this.answer(res, 400, { code: "PARAM_ERROR", message: "out_trade_no" });
		const total = b.amount?.total;
		if (!Number.isInteger(total) || total < 1)
			return this.answer(res, 400, { code: "PARAM_ERROR", message: "amount.total" });
		if (typeof b.notify_url !== "string" || typeof b.description !== "string")
			return this.answer(res, 400, { code: "PARAM_ERROR", message: "notify_url/description" });
		const old = this.transactions.get(b.out_trade_no);
		if (old) {
			if (old.trade_state === "SUCCESS" || old.trade_state === "REFUND")
				return this.answer(res, 400, { code: "ORDERPAID", message: "order paid" });
			if (old.trade_state === "CLOSED") return this.answer(res, 400, { code: "ORDER_CLOSED", message: "order closed" });
			if (old.amount.total !== total)
				return this.answer(res, 400, { code: "INVALID_REQUEST", message: "parameters differ" });
			return this.answer(res, 200, { code_url: old.code_url });
		}
		const tx: SimTransaction = {
			appid: b.appid,
			mchid: b.mchid,
			out_trade_no: b.out_trade_no,
			transaction_id: "",
			trade_state: "NOTPAY",
			trade_state_desc: "订单未支付",
			description: b.description,
			time_expire: b.time_expire ?? new Date(Date.now() + 7200_000).toISOString(),
			notify_url: b.notify_url,
			code_url: `weixin://wxpay/bizpayurl?pr=${crypto.randomBytes(6).toString("base64url")}`,
			amount: { total, payer_total: total, currency: "CNY", payer_currency: "CNY" }
		};
		this.transactions.set(tx.out_trade_no, tx);
		this.answer(res, 200, { code_url: tx.code_url });
	}

	private refund(b: any, res: http.ServerResponse): void {
		if (this.refundRefusal)
			return this.answer(res, this.refundRefusal.status, { code: this.refundRefusal.code, message: "refused" });
		const old = this.refunds.get(b.out_refund_no);
		if (old) return this.answer(res, 200, this.refundView(old, "status"));
		const tx = this.transactions.get(b.out_trade_no);
		if (!tx || (tx.trade_state !== "SUCCESS" && tx.trade_state !== "REFUND"))
			return this.answer(res, 400, { code: "RESOURCE_NOT_EXISTS", message: "no paid order" });
		const refund = b.amount?.refund;
		if (b.amount?.total !== tx.amount.total || !Number.isInteger(refund) || refund < 1 || refund > tx.amount.total)
			return this.answer(res, 400, { code: "PARAM_ERROR", message: "amount" });
		const r: SimRefund = {
			mchid: this.mchid,
			out_trade_no: tx.out_trade_no,
			transaction_id: tx.transaction_id,
			out_refund_no: b.out_refund_no,
			refund_id: "5030" + crypto.randomInt(1e9, 1e10 - 1) + String(Date.now()).slice(-10),
			refund_status: "PROCESSING",
			notify_url: b.notify_url ?? tx.notify_url,
			amount: { total: tx.amount.total, refund, payer_total: tx.amount.total, payer_refund: refund }
		};
		this.refunds.set(r.out_refund_no, r);
		tx.trade_state = "REFUND";
		this.answer(res, 200, this.refundView(r, "status"));
		if (this.refundNotify === "auto") {
			const t = setTimeout(() => {
				this.timers.delete(t);
				r.refund_status = "SUCCESS";
				void this.deliver(this.refundNotifyOf(r));
			}, 20);
			this.timers.add(t);
		}
	}

	/** The refund notify of a refund (REFUND.SUCCESS unless its status says otherwise). */
	refundNotifyOf(r: SimRefund, alter: (resource: any) => void = () => undefined): BuiltNotify & { url: string } {
		const resource = this.refundView(r, "refund_status");
		alter(resource);
		return { url: r.notify_url, ...this.buildNotify(`REFUND.${r.refund_status}`, "refund", resource) };
	}

	private refundView(r: SimRefund, statusKey: "status" | "refund_status") {
		return {
			mchid: r.mchid,
			out_trade_no: r.out_trade_no,
			transaction_id: r.transaction_id,
			out_refund_no: r.out_refund_no,
			refund_id: r.refund_id,
			[statusKey]: r.refund_status,
			amount: r.amount
		};
	}
}

if (require.main === module) {
	const sim = new WechatSim({ retryScale: Number(process.env.WECHAT_SIM_RETRY_SCALE ?? 1) });
	const dir = process.env.WECHAT_SIM_DIR ?? ".wechat-sim";
	const notify = process.env.WECHAT_SIM_NOTIFY_URL ?? "http://127.0.0.1:8080/api/pay/wechat/notify";
	void sim.start(Number(process.env.WECHAT_SIM_PORT ?? 9099)).then(() => {
		const c = sim.mallConfig(dir, notify);
		const env: Record<string, string> = {
			GOMALL_PAY_PROVIDER: "wechat",
			GOMALL_WECHAT_BASE_URL: c.base_url,
			GOMALL_WECHAT_MCHID: c.mchid,
			GOMALL_WECHAT_APPID: c.appid,
			GOMALL_WECHAT_SERIAL_NO: c.serial_no,
			GOMALL_WECHAT_PLATFORM_SERIAL: c.platform_serial,
			GOMALL_WECHAT_PRIVATE_KEY_PATH: path.resolve(c.private_key_path),
			GOMALL_WECHAT_APIV3_KEY: c.apiv3_key,
			GOMALL_WECHAT_PLATFORM_PUBLIC_KEY_PATH: path.resolve(c.platform_public_key_path),
			GOMALL_WECHAT_NOTIFY_URL: c.notify_url
		};
		console.log(`WeChat Pay simulator on ${sim.baseUrl}; start the mall with:`);
		for (const [k, v] of Object.entries(env)) console.log(`export ${k}='${v}'`);
		console.log(`a buyer pays with: curl -X POST ${sim.baseUrl}/sim/pay/<order_no>`);
	});
	process.on("SIGINT", () => void sim.stop().then(() => process.exit(0)));
}
