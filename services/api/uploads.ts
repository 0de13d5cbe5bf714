import type { Context } from "moleculer";
import { getConfig } from "../../config";
import { success } from "../../lib/contract/envelope";
import { bizError } from "../../lib/contract/errors";
import { isMultipart, newBatchId, quotaExempt, secondsToNextDay, uploadFailure } from "../../lib/domain/upload";
import type { MultipartRoute } from "../../lib/http/openapi";
import { callEachNode } from "../../lib/messaging/each-node";
import type { ApiThis, Req, Res } from "./types";

/**
 * Image uploads, multipart through moleculer-web: each file of the form is streamed to its
 * own `upload.save` call; the request's files are published together (finishUpload) or not
 * at all (failUpload). The upload actor owns the directory; GET /uploads/<name> streams back.
 */
export const UPLOAD_PATH = "/api/upload";
export const UPLOAD_ROUTES: Record<string, MultipartRoute> = {
	"POST /": { action: "upload.save", field: "file", maxFiles: 1 },
	"POST /multi": { action: "upload.save", field: "files", maxFiles: getConfig().upload.max_files }
};
/** A form beyond this is refused from its Content-Length, before a byte of it is read. */
const UPLOAD_MAX_BODY = getConfig().upload.max_files * getConfig().upload.max_bytes + 1024 * 1024;
export const refuseUpload =
	(key: "UPLOAD_TOO_MANY_FILES" | "UPLOAD_MALFORMED") => (busboy: { emit(event: string, err: unknown): void }) =>
		busboy.emit("error", bizError(key));

/** A quota refusal says when the next UTC day (and its quota) begins. */
function quotaRetryAfter(res: Res, err: unknown): void {
	if ((err as { type?: unknown })?.type === "UPLOAD_QUOTA_EXCEEDED" && !res.headersSent)
		res.setHeader("Retry-After", String(secondsToNextDay(Date.now())));
}

/** The public view of a stored file: `url` goes into a product's image_url. */
function publicFile(f: { name: string; filename: string; size: number; content_type: string }) {
	return { url: `/uploads/${f.name}`, name: f.name, filename: f.filename, size: f.size, content_type: f.content_type };
}

export const uploadMethods = {
	/**
	 * The upload route's authorization: the usual checks, then a multipart body of a
	 * bounded size from a user whose daily quota is not used up (asked of the upload actor,
	 * which counts it for every node; an admin is not counted); from here on the request's
	 * files stream to the upload actor, staged under the request's id (in ctx.meta, which
	 * every per-file call inherits). The quota is charged only when they are committed.
	 */
	async authorizeUpload(this: ApiThis, ctx: Context<any, any>, route: unknown, req: Req, res: Res): Promise<void> {
		await this.authorize(ctx, route, req, res);
		if (!isMultipart(req.headers["content-type"])) throw bizError("UPLOAD_NOT_MULTIPART");
		if (Number(req.headers["content-length"]) > UPLOAD_MAX_BODY) throw bizError("UPLOAD_TOO_LARGE");
		if (!quotaExempt(ctx.meta.user))
			await ctx.call("upload.admit").catch(err => {
				quotaRetryAfter(res, err);
				throw err;
			});
		const batch = newBatchId();
		req.$upload = { batch, failing: false, settled: false };
		ctx.meta.upload = { batch };
		// A client that goes away mid-form leaves busboy waiting for a body that never ends:
		// its files would stay staged (until the sweep) without this.
		res.once("close", () => {
			if (!res.writableFinished) this.failUpload(req, res, bizError("UPLOAD_MALFORMED"));
		});
	},

	/** Every file of the request is staged: publish them all, then answer. */
	async finishUpload(this: ApiThis, ctx: Context<any, any>, req: Req, res: Res, data: unknown): Promise<unknown> {
		const up = req.$upload;
		const files = (Array.isArray(data) ? data : [data]) as {
			name?: unknown;
			filename: string;
			size: number;
			content_type: string;
		}[];
		// A file whose call failed is in the list as its error (moleculer-web reports it separately).
		const failed = files.find(f => f instanceof Error || typeof f?.name !== "string");
		if (!up || up.failing || failed) throw failed instanceof Error ? failed : bizError("UPLOAD_MALFORMED");
		const staged = files as { name: string; filename: string; size: number; content_type: string }[];
		await ctx.call("upload.commit", { batch: up.batch, names: staged.map(f => f.name) });
		up.settled = true;
		const traceId = ctx.requestID ?? null;
		if (traceId) res.setHeader("X-Trace-Id", traceId);
		const out = staged.map(publicFile);
		return success(Array.isArray(data) ? out : out[0], traceId);
	},

	/**
	 * A refused upload request: nothing of it may stay on disk, so it is answered only once
	 * the upload actor has removed its files. moleculer-web reports one failure several
	 * times (busboy's error, then each pending file's); the first one is the answer.
	 */
	failUpload(this: ApiThis, req: Req, res: Res, err: unknown): void {
		const up = req.$upload!;
		if (up.failing) return;
		up.failing = true;
		const failure = uploadFailure(err);
		quotaRetryAfter(res, failure);
		void this.discardUpload(up.batch).finally(() => {
			up.settled = true;
			if (!res.destroyed) this.sendError(req, res, failure);
		});
	},

	/** Every node running the upload actor: the files of one request may have gone to several. */
	discardUpload(this: ApiThis, batch: string): Promise<unknown> {
		return callEachNode(this.broker, "upload", "upload.discard", { batch }, 10000);
	}
} satisfies Partial<ApiThis>;
