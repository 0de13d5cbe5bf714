import { readRawBody } from "../../lib/http/body";
import type { ApiThis, Req, Res } from "./types";

/** The notify's own route: no token, no JSON parser (the signature covers the exact bytes). */
export const PAY_NOTIFY_PATH = "/api/pay";
/** A notify is a few kB; anything larger is not one. */
const NOTIFY_MAX_BYTES = 64 * 1024;
/** The headers the provider signs with; nothing else of the request goes to the order actor. */
const SIGNED_HEADERS = ["wechatpay-timestamp", "wechatpay-nonce", "wechatpay-signature", "wechatpay-serial"];

/** WeChat's own answer shape for a refused notify (it retries until a 2xx). */
function fail(res: Res, status: number, message: string): void {
	res.writeHead(status, { "Content-Type": "application/json; charset=utf-8" });
	res.end(JSON.stringify({ code: "FAIL", message }));
}

export const payNotifyAliases = {
	/**
	 * WeChat Pay's notify: the body's bytes and signature headers go to the order actor, which
	 * verifies, decrypts and applies it once; 204 for applied or duplicate, 4xx FAIL for a bad
	 * one (nothing changed), 503 FAIL while the order actor cannot answer (WeChat retries).
	 */
	"POST /wechat/notify"(this: ApiThis, req: Req, res: Res) {
		readRawBody(req, NOTIFY_MAX_BYTES)
			.then(async body => {
				const headers: Record<string, string> = {};
				for (const h of SIGNED_HEADERS) {
					const v = req.headers[h];
					if (typeof v === "string") headers[h] = v.slice(0, 1024);
				}
				const answer = (await this.broker.call("order.paymentNotify", {
					headers,
					body: body.toString("base64")
				})) as { status: number; message?: string };
				if (answer.status >= 200 && answer.status < 300) {
					res.writeHead(204);
					res.end();
				} else fail(res, answer.status, answer.message ?? "refused");
			})
			.catch((err: { status?: number; message?: string; name?: string }) => {
				if (res.headersSent) return;
				if (err?.status === 413) return fail(res, 413, "body too large");
				this.logger.warn(`payment notify not handled: ${err?.name ?? "Error"}: ${err?.message}`);
				fail(res, 503, "temporarily unavailable, retry");
			});
	}
};
