import crypto from "node:crypto";
import { bizError } from "../contract/errors";
import { isCodeKey } from "../contract/codes";

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
