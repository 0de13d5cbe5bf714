import type { IncomingMessage } from "node:http";

/** An error shaped like body-parser's, so the gateway's renderError maps it the same way. */
function bodyError(type: string, status: number, message: string): Error {
	return Object.assign(new Error(message), { type, status });
}

/** `64kb`, `1mb`, `512b` (the config's http.body_limit) in bytes. */
export function parseByteLimit(limit: string): number {
	const m = /^(\d+)(b|kb|mb)$/.exec(limit);
	if (!m) throw new Error(`bad byte limit "${limit}"`);
	return Number(m[1]) * { b: 1, kb: 1024, mb: 1024 * 1024 }[m[2] as "b" | "kb" | "mb"];
}

/**
 * Reads a JSON request body as moleculer-web's JSON parser (body-parser, strict) would for the
 * gateway's routes: only for a JSON content type (anything else reads as no body), at most
 * `limit` bytes (413 past it), only an object or an array at the top (400 otherwise).
 */
export function readJsonBody(req: IncomingMessage, limit: number): Promise<unknown> {
	const type = req.headers["content-type"] ?? "";
	if (!/^application\/([\w.+-]+\+)?json\b/i.test(type)) {
		req.resume();
		return Promise.resolve({});
	}
	return readRawBody(req, limit).then(buf => {
		const text = buf.toString("utf8");
		if (!text) return {};
		const first = text.trimStart()[0];
		if (first !== "{" && first !== "[") throw bodyError("entity.parse.failed", 400, "malformed JSON body");
		try {
			return JSON.parse(text);
		} catch {
			throw bodyError("entity.parse.failed", 400, "malformed JSON body");
		}
	});
}

/**
 * A request body's exact bytes, at most `limit` (413 past it, from Content-Length before a byte
 * is read): what readJsonBody parses, and what a route whose body is signed (a payment
 * provider's notify) verifies as it came.
 */
export function readRawBody(req: IncomingMessage, limit: number): Promise<Buffer> {
	if (Number(req.headers["content-length"] ?? -1) > limit) {
		req.resume();
		return Promise.reject(bodyError("entity.too.large", 413, "request entity too large"));
	}
	return new Promise((resolve, reject) => {
		const chunks: Buffer[] = [];
		let size = 0;
		req.on("data", (chunk: Buffer) => {
			size += chunk.length;
			if (size > limit) {
				req.removeAllListeners("data");
				req.resume();
				reject(bodyError("entity.too.large", 413, "request entity too large"));
				return;
			}
			chunks.push(chunk);
		});
		req.on("end", () => {
			if (size <= limit) resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
		});
		req.on("error", reject);
	});
}
