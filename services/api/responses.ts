import { renderError } from "../../lib/contract/envelope";
import type { ApiThis, Req, Res } from "./types";

const SECURITY_HEADERS: [string, string][] = [
	["X-Content-Type-Options", "nosniff"],
	["X-Frame-Options", "DENY"],
	["Referrer-Policy", "no-referrer"],
	["Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"],
	["Cross-Origin-Opener-Policy", "same-origin"]
];

/** Milliseconds since the request began (beginRequest). */
export const requestMs = (req: Req): number =>
	req.$startedAt === undefined ? 0 : Number(process.hrtime.bigint() - req.$startedAt) / 1e6;

export const responseMethods = {
	/**
	 * Every request, before anything else: its start time and metric sample, the security
	 * headers, and while draining a "Connection: close" so keep-alive clients reconnect
	 * (to another node).
	 */
	beginRequest(this: ApiThis, req: Req, res: Res): void {
		req.$startedAt = process.hrtime.bigint();
		res.once("finish", () => this.observe(req, res));
		for (const [k, v] of SECURITY_HEADERS) res.setHeader(k, v);
		if (this.draining) res.setHeader("Connection", "close");
	},

	/**
	 * The only error writer: every failure leaves as the envelope with its HTTP status. It
	 * replaces moleculer-web's own sendError, the one place that would consult a route's or the
	 * settings' onError, so routes declare none.
	 */
	sendError(this: ApiThis, req: Req, res: Res, err: unknown): void {
		if (req.$upload && !req.$upload.settled) return this.failUpload(req, res, err);
		const traceId = req.$traceId ?? req.$ctx?.requestID ?? null;
		const out = renderError(err, traceId);
		if (out.unexpected) {
			// Name and message only: a stack or a driver message may hold SQL or data.
			const e = err as { name?: string; message?: string };
			const message = e?.name?.startsWith("Sequelize") ? "(database error)" : e?.message;
			this.logger.error(
				`request failed: ${req.method} ${req.url?.split("?")[0]} ${e?.name ?? "Error"}: ${message} trace_id=${traceId}`
			);
		}
		if (res.headersSent) return;
		if (out.retryAfter && !res.hasHeader("Retry-After")) res.setHeader("Retry-After", String(out.retryAfter));
		this.sendJson(res, out.status, out.body, traceId);
	},

	/** moleculer-web logs 5xx with their stack; ours go through sendError without it. */
	errorHandler(this: ApiThis, req: Req, res: Res, err: unknown): void {
		this.sendError(req, res, err);
	},

	/** `batched`: ended with the turn's other answers (lib/reply-batch), when http.batch_replies is on. */
	sendJson(this: ApiThis, res: Res, status: number, body: unknown, traceId?: string | null, batched = false): void {
		if (traceId) res.setHeader("X-Trace-Id", traceId);
		res.writeHead(status, { "Content-Type": "application/json; charset=utf-8" });
		const text = JSON.stringify(body);
		if (batched && this.replies) this.replies.end(res, text);
		else res.end(text);
	}
} satisfies Partial<ApiThis>;
