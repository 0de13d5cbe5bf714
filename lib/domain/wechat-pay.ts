/**
 * WeChat Pay API v3's signatures and encryption, with node:crypto only:
 * - requests: `Authorization: WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",signature="…",timestamp="…",serial_no="…"`,
 *   the signature RSA-SHA256 (PKCS#1 v1.5) with the merchant key over `METHOD\nURL\ntimestamp\nnonce\nbody\n`;
 * - answers and notifies: `Wechatpay-Signature` over `timestamp\nnonce\nbody\n` with the platform key;
 * - a notify's `resource`: AEAD_AES_256_GCM with the APIv3 key (ciphertext base64 = data ‖ 16-byte tag).
 */
import crypto, { KeyObject } from "node:crypto";

export const AUTH_SCHEMA = "WECHATPAY2-SHA256-RSA2048";
/** A notify or answer older or newer than this is refused (a replay). */
export const MAX_CLOCK_SKEW_S = 300;

export function nonce(bytes = 16): string {
	return crypto.randomBytes(bytes).toString("hex");
}

export function rsaSign(message: string | Buffer, key: KeyObject | string): string {
	return crypto
		.sign("sha256", typeof message === "string" ? Buffer.from(message, "utf8") : message, key)
		.toString("base64");
}

export function rsaVerify(message: string | Buffer, signature: string, key: KeyObject | string): boolean {
	try {
		const data = typeof message === "string" ? Buffer.from(message, "utf8") : message;
		return crypto.verify("sha256", data, key, Buffer.from(signature, "base64"));
	} catch {
		return false;
	}
}

/** The message a request's signature covers; `url` is the path with its query. */
export function requestMessage(method: string, url: string, timestamp: string, nonceStr: string, body: string): string {
	return `${method}\n${url}\n${timestamp}\n${nonceStr}\n${body}\n`;
}

/** The message an answer's or a notify's signature covers, over the body's exact bytes. */
export function responseMessage(timestamp: string, nonceStr: string, body: Buffer | string): Buffer {
	return Buffer.concat([
		Buffer.from(`${timestamp}\n${nonceStr}\n`, "utf8"),
		typeof body === "string" ? Buffer.from(body, "utf8") : body,
		Buffer.from("\n", "utf8")
	]);
}

export function authorization(
	p: { mchid: string; serial_no: string; key: KeyObject | string },
	method: string,
	url: string,
	body: string,
	timestamp = String(Math.floor(Date.now() / 1000)),
	nonceStr = nonce()
): string {
	const signature = rsaSign(requestMessage(method, url, timestamp, nonceStr, body), p.key);
	return `${AUTH_SCHEMA} mchid="${p.mchid}",nonce_str="${nonceStr}",signature="${signature}",timestamp="${timestamp}",serial_no="${p.serial_no}"`;
}

/** The fields of an Authorization header (null: not this schema). */
export function parseAuthorization(header: string | undefined): Record<string, string> | null {
	if (!header?.startsWith(AUTH_SCHEMA + " ")) return null;
	const out: Record<string, string> = {};
	for (const m of header.slice(AUTH_SCHEMA.length + 1).matchAll(/(\w+)="([^"]*)"/g)) out[m[1]] = m[2];
	return out;
}

export interface SignedHeaders {
	timestamp?: string;
	nonce?: string;
	signature?: string;
	serial?: string;
}

/**
 * Why a signed answer or notify is refused, or null when it is good. `platformSerial`, when
 * known, must be the serial it was signed under: WeChat names the key it used, and a message
 * naming another (a rotated-out or foreign certificate) is not verified against ours by luck.
 */
export function signatureProblem(
	h: SignedHeaders,
	body: Buffer,
	platformKey: KeyObject | string,
	nowMs = Date.now(),
	platformSerial = ""
): string | null {
	if (!h.timestamp || !h.nonce || !h.signature || !h.serial) return "missing Wechatpay-* signature headers";
	if (platformSerial && h.serial.toUpperCase() !== platformSerial.toUpperCase())
		return "Wechatpay-Serial is not the configured platform certificate's";
	if (!/^\d{1,12}$/.test(h.timestamp)) return "bad Wechatpay-Timestamp";
	if (Math.abs(nowMs / 1000 - Number(h.timestamp)) > MAX_CLOCK_SKEW_S) return "Wechatpay-Timestamp too far from now";
	if (!rsaVerify(responseMessage(h.timestamp, h.nonce, body), h.signature, platformKey)) return "signature mismatch";
	return null;
}

export interface EncryptedResource {
	algorithm: string;
	ciphertext: string;
	nonce: string;
	associated_data?: string;
	original_type?: string;
}

export function aesGcmDecrypt(r: EncryptedResource, apiv3Key: string): string {
	if (r.algorithm !== "AEAD_AES_256_GCM") throw new Error(`unsupported algorithm ${r.algorithm}`);
	const data = Buffer.from(r.ciphertext, "base64");
	if (data.length < 17) throw new Error("ciphertext too short");
	const decipher = crypto.createDecipheriv("aes-256-gcm", Buffer.from(apiv3Key, "utf8"), Buffer.from(r.nonce, "utf8"));
	decipher.setAuthTag(data.subarray(data.length - 16));
	decipher.setAAD(Buffer.from(r.associated_data ?? "", "utf8"));
	return Buffer.concat([decipher.update(data.subarray(0, data.length - 16)), decipher.final()]).toString("utf8");
}

export function aesGcmEncrypt(
	plaintext: string,
	apiv3Key: string,
	associatedData: string,
	nonceStr = nonce(6)
): EncryptedResource {
	const cipher = crypto.createCipheriv("aes-256-gcm", Buffer.from(apiv3Key, "utf8"), Buffer.from(nonceStr, "utf8"));
	cipher.setAAD(Buffer.from(associatedData, "utf8"));
	const data = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final(), cipher.getAuthTag()]);
	return {
		algorithm: "AEAD_AES_256_GCM",
		ciphertext: data.toString("base64"),
		nonce: nonceStr,
		associated_data: associatedData
	};
}

/** RFC 3339 in China Standard Time, as the v3 API writes `time_expire`. */
export function rfc3339Cst(d: Date): string {
	const cst = new Date(d.getTime() + 8 * 3600 * 1000);
	return cst.toISOString().replace(/\.\d{3}Z$/, "+08:00");
}
