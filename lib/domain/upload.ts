import crypto from "node:crypto";
import { bizError } from "../contract/errors";
import { isCodeKey } from "../contract/codes";
import { ROLE_ADMIN } from "../auth/jwt";

/**
 * Image uploads: what an image is (by its bytes), how a stored file is named, and how the
 * failures of moleculer-web's multipart pipeline become upload codes.
 */

export interface ImageType {
	readonly ext: "png" | "jpg" | "gif" | "webp";
	readonly contentType: string;
}

const TYPES: Record<ImageType["ext"], ImageType> = {
	png: Object.freeze({ ext: "png", contentType: "image/png" }),
	jpg: Object.freeze({ ext: "jpg", contentType: "image/jpeg" }),
	gif: Object.freeze({ ext: "gif", contentType: "image/gif" }),
	webp: Object.freeze({ ext: "webp", contentType: "image/webp" })
};

/** Bytes needed to tell the four formats apart (WebP's "RIFF....WEBP" is the longest). */
export const SNIFF_BYTES = 12;

const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/**
 * The image type from a file's first bytes, or null. The client's file name and content
 * type are never consulted: both are whatever the client says.
 */
export function sniffImage(head: Buffer): ImageType | null {
	if (head.length >= 8 && head.subarray(0, 8).equals(PNG_MAGIC)) return TYPES.png;
	if (head.length >= 3 && head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) return TYPES.jpg;
	if (head.length >= 6) {
		const gif = head.toString("latin1", 0, 6);
		if (gif === "GIF87a" || gif === "GIF89a") return TYPES.gif;
	}
	if (head.length >= 12 && head.toString("latin1", 0, 4) === "RIFF" && head.toString("latin1", 8, 12) === "WEBP")
		return TYPES.webp;
	return null;
}

/**
 * The only names ever stored or served: 128 random bits and the detected type's extension.
 * GET /uploads/<name> serves nothing that does not match, so no path can be smuggled in.
 */
export const STORED_NAME = /^[0-9a-f]{32}\.(png|jpg|gif|webp)$/;

/** One upload request's id: its files are staged under it until the request succeeds. */
export const BATCH_ID = /^[0-9a-f]{32}$/;

export function newStoredName(type: ImageType): string {
	return `${crypto.randomBytes(16).toString("hex")}.${type.ext}`;
}

export function newBatchId(): string {
	return crypto.randomBytes(16).toString("hex");
}

/** The type of a stored name (its extension was derived from the bytes when it was stored). */
export function storedType(name: string): ImageType | null {
	const m = STORED_NAME.exec(name);
	return m ? TYPES[m[1] as ImageType["ext"]] : null;
}

/** True when a Content-Type header announces a multipart/form-data body with a boundary. */
export function isMultipart(contentType: string | undefined): boolean {
	return (
		!!contentType &&
		/^multipart\/form-data\s*;/i.test(contentType) &&
		/;\s*boundary=("[^"]+"|[^\s;]+)/i.test(contentType)
	);
}

/**
 * What a failed upload request reports. moleculer-web's multipart handler raises its own
 * errors (a file over busboy's size limit, a form without a file) and busboy's parse errors
 * are plain Errors; they become upload codes here, and everything else (our business
 * errors, the cluster's 503s, bugs) goes on to renderError unchanged.
 */
export function uploadFailure(err: unknown): unknown {
	const e = (err ?? {}) as { name?: string; type?: unknown; message?: string };
	// Before the code keys: moleculer-web's error has the type PAYLOAD_TOO_LARGE, the body limit's code.
	if (e.name === "PayloadTooLarge") return bizError("UPLOAD_TOO_LARGE");
	if (isCodeKey(e.type)) return err;
	if (e.name === "MoleculerClientError" && e.message === "File missing in the request")
		return bizError("UPLOAD_NO_FILE");
	if (e.name === "Error") return bizError("UPLOAD_MALFORMED");
	return err;
}

/**
 * The per-user upload quota (config upload.quota_*): what one user stored on one UTC day, in
 * one Redis hash (`files`, `bytes`) that every upload node adds to, so spreading requests over
 * nodes gains nothing. Only committed requests count.
 */
export interface QuotaUse {
	files: number;
	bytes: number;
}

/** The UTC day a time falls in, `YYYY-MM-DD`: the quota's period. */
export function quotaDay(nowMs: number): string {
	return new Date(nowMs).toISOString().slice(0, 10);
}

/** One user's counters for one day (a single key, so one Redis Cluster slot per call). */
export function quotaKey(userId: number, day: string): string {
	return `upload:quota:{u${userId}}:${day}`;
}

/** Seconds until the next UTC midnight, when a new day's quota begins (at least 1): the Retry-After of a refusal. */
export function secondsToNextDay(nowMs: number): number {
	const d = new Date(nowMs);
	const next = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1);
	return Math.max(1, Math.ceil((next - nowMs) / 1000));
}

/** How long a day's counters live: past the day's end, with an hour to spare for clocks that disagree. */
export function quotaKeyTtl(nowMs: number): number {
	return secondsToNextDay(nowMs) + 3600;
}

/**
 * The limit a request adding `add` to `used` would pass ("files" first), or null; a limit of 0
 * is none. Adding nothing asks whether anything at all may still be added (at least one file
 * of one byte): the check made before a request's body is read.
 */
export function overQuota(used: QuotaUse, add: QuotaUse, limits: QuotaUse): "files" | "bytes" | null {
	if (limits.files > 0 && used.files + Math.max(add.files, 1) > limits.files) return "files";
	if (limits.bytes > 0 && used.bytes + Math.max(add.bytes, 1) > limits.bytes) return "bytes";
	return null;
}

/**
 * Admins are not counted: they stock the catalogue (a bulk import is many images a day), and
 * an admin account is made by an operator, not by open registration, the quota's target.
 */
export function quotaExempt(user: { role?: unknown } | null | undefined): boolean {
	return user?.role === ROLE_ADMIN;
}
