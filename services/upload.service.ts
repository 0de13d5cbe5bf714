import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import type { Context, Service, ServiceSchema, ServiceSettingSchema } from "moleculer";
import { getConfig } from "../config";
import type { AuthUser } from "../lib/auth/jwt";
import { bizError } from "../lib/contract/errors";
import {
	BATCH_ID,
	ImageType,
	newStoredName,
	overQuota,
	quotaDay,
	quotaExempt,
	quotaKey,
	quotaKeyTtl,
	QuotaUse,
	SNIFF_BYTES,
	sniffImage,
	STORED_NAME,
	storedType
} from "../lib/domain/upload";
import { callEachNode } from "../lib/messaging/each-node";
import { counter } from "../lib/observability/metrics";
import type { RedisClient } from "../lib/storage/redis";
import { RedisMixin } from "../mixins/redis.mixin";

/** Staged files older than this belong to no live request (a node died mid-upload). */
const STALE_MS = 3600_000;
const SWEEP_INTERVAL_MS = 600_000;
/** How long a refused request's id is remembered, so a file of it still on its way is refused too. */
const DISCARDED_TTL_MS = 600_000;
const IMMUTABLE = "public, max-age=31536000, immutable";
/** Names asked of the product actor at once by the orphan sweep (its imageRefs takes up to 1000). */
const ORPHAN_BATCH = 500;
const QUOTA_REFUSED = "gomall_upload_quota_refused_total";
const DELETED = "gomall_upload_deleted_total";
const ORPHANS_SWEPT = "gomall_upload_orphans_swept_total";

type UploadMeta = { upload?: { batch?: unknown }; user?: AuthUser | null };

/** What a request's commit added to its user's day, to take back if the files cannot be published. */
interface QuotaCharge extends QuotaUse {
	key: string;
}

export interface OrphanSweep {
	/** stored files in the directory */
	scanned: number;
	/** of which older than upload.orphan_grace_hours */
	old: number;
	/** of which no product references: removed */
	swept: number;
}

type QuotaRedis = RedisClient & {
	uploadQuota(key: string, ...args: number[]): Promise<[number, number, number, string?]>;
};

export interface StagedFile {
	name: string;
	filename: string;
	size: number;
	content_type: string;
}

interface UploadThis extends Service {
	redis: QuotaRedis;
	dir: string;
	incoming: string;
	dirReady: Promise<void> | null;
	inflight: Map<string, Set<{ stream: Readable; done: Promise<unknown> }>>;
	discarded: Map<string, number>;
	sweepTimer: NodeJS.Timeout | null;
	orphanTimer: NodeJS.Timeout | null;
	orphanSweep: Promise<OrphanSweep> | null;
	ensureDirs(): Promise<void>;
	staged(batch: string, name: string): string;
	stage(stream: Readable, batch: string, filename: string): Promise<StagedFile>;
	receive(stream: Readable, tmp: (type: ImageType) => string): Promise<{ type: ImageType; size: number; file: string }>;
	commit(batch: string, names: string[], user: AuthUser | null | undefined): Promise<void>;
	quotaUser(user: AuthUser | null | undefined): AuthUser | null;
	quotaUsed(key: string): Promise<QuotaUse>;
	admit(user: AuthUser | null | undefined): Promise<QuotaUse | null>;
	charge(user: AuthUser | null | undefined, add: QuotaUse): Promise<QuotaCharge | null>;
	refund(charge: QuotaCharge): Promise<void>;
	refuseQuota(limit: "files" | "bytes"): never;
	removeEverywhere(name: string): Promise<{ name: string }>;
	unlinkStored(name: string): Promise<boolean>;
	sweepOrphans(): Promise<OrphanSweep>;
	runOrphanSweep(): Promise<OrphanSweep>;
	discard(batch: string): Promise<void>;
	open(ctx: Context<unknown, Record<string, unknown>>, name: string): Promise<Readable>;
	sweep(): Promise<void>;
}

function batchOf(ctx: Context<unknown, UploadMeta>): string {
	const batch = ctx.meta.upload?.batch;
	// Only the gateway sets it; anything else is not a request of ours.
	if (typeof batch !== "string" || !BATCH_ID.test(batch)) throw bizError("UPLOAD_MALFORMED");
	return batch;
}

async function writeAll(fh: fsp.FileHandle, buf: Buffer): Promise<void> {
	let off = 0;
	while (off < buf.length) off += (await fh.write(buf, off, buf.length - off)).bytesWritten;
}

const isFsError = (err: unknown) =>
	typeof (err as { code?: unknown })?.code === "string" &&
	/^E[A-Z]+$/.test((err as { code: string }).code) &&
	typeof (err as { syscall?: unknown }).syscall === "string";

/**
 * The upload actor: it owns the upload directory. The gateway streams each file of a
 * multipart request to `save` (over the transporter when this actor runs on another node);
 * the file is checked by its bytes and staged under the request's id in `<dir>/.incoming`,
 * and only when every file of the request is staged does the gateway `commit` them (a
 * rename into `<dir>`); a refused request is `discard`ed, files in flight included. `get`
 * streams a stored file back for GET /uploads/<name>.
 *
 * Bounded disk: each user's committed files and bytes per UTC day are counted in Redis (shared
 * by every upload node; `admit` refuses a used-up user before the body is read, `commit`
 * adds a request atomically or refuses it whole); an admin `remove`s a stored file on every
 * upload node; and stored files no product references are swept once past a grace period.
 */
const UploadService: ServiceSchema<ServiceSettingSchema, Record<string, any>, Record<string, any>, UploadThis> = {
	name: "upload",
	mixins: [RedisMixin("gomall-upload", { uploadQuota: { file: "upload_quota.lua", numberOfKeys: 1 } })],

	actions: {
		save: {
			auth: "user",
			params: {
				$filename: { type: "string", optional: true },
				$$strict: "remove"
			},
			// A stream cannot be replayed: a retried call would read nothing.
			retryPolicy: { enabled: false },
			async handler(this: UploadThis, ctx: Context<{ $filename?: string }, UploadMeta>): Promise<StagedFile> {
				if (!ctx.stream) throw bizError("UPLOAD_NO_FILE");
				return this.stage(ctx.stream as Readable, batchOf(ctx), ctx.params.$filename ?? "");
			}
		},
		commit: {
			visibility: "public",
			params: {
				batch: { type: "string", pattern: BATCH_ID },
				names: { type: "array", min: 1, max: 100, items: { type: "string", pattern: STORED_NAME } }
			},
			// The caller's user (ctx.meta.user, set by the gateway) is charged for the files.
			handler(this: UploadThis, ctx: Context<{ batch: string; names: string[] }, UploadMeta>): Promise<void> {
				return this.commit(ctx.params.batch, ctx.params.names, ctx.meta.user);
			}
		},
		/**
		 * The gateway, before it reads an upload's body: refused (UPLOAD_QUOTA_EXCEEDED) when the
		 * caller's day is used up, so a used-up user's further requests cost no disk and no
		 * bandwidth. Answers the day's use so far (null: not counted, an admin).
		 */
		admit: {
			visibility: "public",
			handler(this: UploadThis, ctx: Context<unknown, UploadMeta>): Promise<QuotaUse | null> {
				return this.admit(ctx.meta.user);
			}
		},
		discard: {
			visibility: "public",
			params: { batch: { type: "string", pattern: BATCH_ID } },
			handler(this: UploadThis, ctx: Context<{ batch: string }>): Promise<void> {
				return this.discard(ctx.params.batch);
			}
		},
		/** DELETE /api/upload/:name: the stored file, on every node holding an upload directory. */
		remove: {
			auth: "admin",
			// A replay after a timeout would answer "not found" for a delete that succeeded.
			retryPolicy: { enabled: false },
			// Not a pattern here: a bad name is a file that does not exist (404), not a 400.
			params: { name: { type: "string" } },
			handler(this: UploadThis, ctx: Context<{ name: string }>): Promise<{ name: string }> {
				return this.removeEverywhere(ctx.params.name);
			}
		},
		/** This node's part of `remove`: true when its directory held the file. */
		unlink: {
			visibility: "public",
			params: { name: { type: "string", pattern: STORED_NAME } },
			async handler(this: UploadThis, ctx: Context<{ name: string }>): Promise<{ removed: boolean }> {
				return { removed: await this.unlinkStored(ctx.params.name) };
			}
		},
		/**
		 * An operator's sweep of this node's directory (REPL: `call upload.sweepOrphans`, or
		 * `dcall <nodeID> upload.sweepOrphans` on each upload node with a directory of its own);
		 * also run every upload.orphan_sweep_interval. Refused, removing nothing, when no product
		 * actor answers.
		 */
		sweepOrphans: {
			visibility: "public",
			handler(this: UploadThis): Promise<OrphanSweep> {
				return this.sweepOrphans();
			}
		},
		get: {
			// Not a pattern here: a bad name is a file that does not exist (404), not a 400.
			params: { name: { type: "string", max: 256 } },
			handler(this: UploadThis, ctx: Context<{ name: string }, Record<string, unknown>>): Promise<Readable> {
				return this.open(ctx, ctx.params.name);
			}
		}
	},

	methods: {
		ensureDirs(this: UploadThis): Promise<void> {
			// Made on first use, so a node that never receives an upload leaves no directory behind.
			this.dirReady ??= fsp.mkdir(this.incoming, { recursive: true }).then(
				() => undefined,
				err => {
					this.dirReady = null;
					throw err;
				}
			);
			return this.dirReady;
		},

		staged(this: UploadThis, batch: string, name: string): string {
			return path.join(this.incoming, `${batch}-${name}`);
		},

		async stage(this: UploadThis, stream: Readable, batch: string, filename: string): Promise<StagedFile> {
			if (this.discarded.has(batch)) {
				stream.resume();
				throw bizError("UPLOAD_MALFORMED");
			}
			let name = "";
			const done = this.receive(stream, type => this.staged(batch, (name = newStoredName(type))));
			const entry = { stream, done };
			let set = this.inflight.get(batch);
			if (!set) this.inflight.set(batch, (set = new Set()));
			set.add(entry);
			try {
				const { type, size } = await done;
				// The request was refused while this file was on its way: it goes too.
				if (this.discarded.has(batch)) {
					await fsp.rm(this.staged(batch, name), { force: true });
					throw bizError("UPLOAD_MALFORMED");
				}
				return { name, filename: filename.slice(0, 255), size, content_type: type.contentType };
			} finally {
				set.delete(entry);
				if (!set.size) this.inflight.delete(batch);
			}
		},

		/**
		 * Reads one file: the first bytes decide whether it is an image at all, and only then
		 * is a file created; the size limit is counted here as well as by busboy (a caller
		 * other than the gateway has no busboy). On any failure the staged file is removed.
		 */
		async receive(
			this: UploadThis,
			stream: Readable,
			tmp: (type: ImageType) => string
		): Promise<{ type: ImageType; size: number; file: string }> {
			const max = getConfig().upload.max_bytes;
			let head = Buffer.alloc(0);
			let type: ImageType | null = null;
			let size = 0;
			let file = "";
			let fh: fsp.FileHandle | null = null;
			const start = async (): Promise<void> => {
				type = sniffImage(head);
				if (!type) throw bizError("UPLOAD_NOT_IMAGE");
				await this.ensureDirs();
				file = tmp(type);
				fh = await fsp.open(file, "wx", 0o644);
				await writeAll(fh, head);
			};
			try {
				for await (const chunk of stream as AsyncIterable<Buffer>) {
					size += chunk.length;
					if (size > max) throw bizError("UPLOAD_TOO_LARGE");
					if (fh) await writeAll(fh, chunk);
					else {
						head = Buffer.concat([head, chunk]);
						if (head.length >= SNIFF_BYTES) await start();
					}
				}
				if (!fh) await start();
				const handle = fh as unknown as fsp.FileHandle;
				// On disk before it is renamed into place: a crash must not publish an empty file.
				await handle.sync();
				await handle.close();
				fh = null;
				return { type: type as unknown as ImageType, size, file };
			} catch (err) {
				if (fh) await (fh as fsp.FileHandle).close().catch(() => undefined);
				if (file) await fsp.rm(file, { force: true }).catch(() => undefined);
				const e = err as { name?: string; type?: unknown };
				if (e?.name === "PayloadTooLarge") throw bizError("UPLOAD_TOO_LARGE");
				if (typeof e?.type === "string" && e.type.startsWith("UPLOAD_")) throw err;
				if (isFsError(err)) {
					// The reason stays in this node's log; the client learns only that saving failed.
					this.logger.error(`upload: cannot write a staged file: ${(err as NodeJS.ErrnoException).code}`);
					throw bizError("UPLOAD_SAVE_FAILED");
				}
				// The stream broke: the client went away, busboy found a bad part, or the request was discarded.
				throw bizError("UPLOAD_MALFORMED");
			}
		},

		/**
		 * All of a request's files, or none: its user's quota is charged for them (or the request
		 * refused whole), then a failed rename takes back the ones already moved and the charge.
		 */
		async commit(this: UploadThis, batch: string, names: string[], user: AuthUser | null | undefined): Promise<void> {
			const moved: string[] = [];
			let charged: QuotaCharge | null = null;
			try {
				let bytes = 0;
				for (const name of names) bytes += (await fsp.stat(this.staged(batch, name))).size;
				charged = await this.charge(user, { files: names.length, bytes });
				for (const name of names) {
					const to = path.join(this.dir, name);
					await fsp.rename(this.staged(batch, name), to);
					moved.push(to);
				}
			} catch (err) {
				const refused = typeof (err as { type?: unknown })?.type === "string";
				if (!refused)
					this.logger.error(
						`upload: cannot publish a staged file: ${(err as NodeJS.ErrnoException).code ?? (err as Error).name}`
					);
				await Promise.allSettled(
					[...moved, ...names.map(n => this.staged(batch, n))].map(f => fsp.rm(f, { force: true }))
				);
				if (charged) await this.refund(charged);
				throw refused ? err : bizError("UPLOAD_SAVE_FAILED");
			}
		},

		/** The user a request is counted against, or null when it is not counted (an admin). */
		quotaUser(this: UploadThis, user: AuthUser | null | undefined): AuthUser | null {
			if (quotaExempt(user)) return null;
			// Only the gateway calls, always for a logged-in user; anything else is not ours to store.
			if (!user || !Number.isSafeInteger(user.id)) throw bizError("UNAUTHORIZED");
			return user;
		},

		async quotaUsed(this: UploadThis, key: string): Promise<QuotaUse> {
			const [files, bytes] = await this.redis.hmget(key, "files", "bytes");
			return { files: Number(files ?? 0), bytes: Number(bytes ?? 0) };
		},

		async admit(this: UploadThis, user: AuthUser | null | undefined): Promise<QuotaUse | null> {
			const u = this.quotaUser(user);
			if (!u) return null;
			const { quota_files_per_day: files, quota_bytes_per_day: bytes } = getConfig().upload;
			if (!files && !bytes) return null;
			let used: QuotaUse;
			try {
				used = await this.quotaUsed(quotaKey(u.id, quotaDay(Date.now())));
			} catch (err) {
				// Without the count nothing is stored: the disk stays bounded while Redis is away.
				this.logger.warn(`upload: quota unavailable (${(err as Error).name}); refusing uploads`);
				throw bizError("UNAVAILABLE");
			}
			const over = overQuota(used, { files: 0, bytes: 0 }, { files, bytes });
			if (over) this.refuseQuota(over);
			return used;
		},

		/** Adds a request to its user's day, atomically against every other node's requests, or refuses it. */
		async charge(this: UploadThis, user: AuthUser | null | undefined, add: QuotaUse): Promise<QuotaCharge | null> {
			const u = this.quotaUser(user);
			const { quota_files_per_day: files, quota_bytes_per_day: bytes } = getConfig().upload;
			if (!u || (!files && !bytes)) return null;
			const now = Date.now();
			const key = quotaKey(u.id, quotaDay(now));
			let answer: [number, number, number, string?];
			try {
				answer = await this.redis.uploadQuota(key, add.files, add.bytes, files, bytes, quotaKeyTtl(now));
			} catch (err) {
				this.logger.warn(`upload: quota unavailable (${(err as Error).name}); refusing uploads`);
				throw bizError("UNAVAILABLE");
			}
			if (Number(answer[0]) !== 1) this.refuseQuota(answer[3] === "bytes" ? "bytes" : "files");
			return { key, ...add };
		},

		/** Takes back a charge whose files were not published. A refund that fails only over-counts the day. */
		async refund(this: UploadThis, charge: QuotaCharge): Promise<void> {
			try {
				await this.redis
					.multi()
					.hincrby(charge.key, "files", -charge.files)
					.hincrby(charge.key, "bytes", -charge.bytes)
					.exec();
			} catch (err) {
				this.logger.warn(`upload: could not take back a quota charge (${(err as Error).name})`);
			}
		},

		refuseQuota(this: UploadThis, limit: "files" | "bytes"): never {
			this.broker.metrics.increment(QUOTA_REFUSED, { limit });
			throw bizError("UPLOAD_QUOTA_EXCEEDED");
		},

		/**
		 * Removes a stored file from every node running this actor (each may have a directory of
		 * its own, or share one): found on any, it is gone; found on none, 404; a node that did
		 * not answer may still hold it, so then the admin is asked to retry.
		 */
		async removeEverywhere(this: UploadThis, name: string): Promise<{ name: string }> {
			if (!STORED_NAME.test(name)) throw bizError("UPLOAD_NOT_FOUND");
			const answers = await callEachNode<{ removed: boolean }>(this.broker, "upload", "upload.unlink", { name }, 10000);
			if (answers.some(a => a.result?.removed)) {
				this.broker.metrics.increment(DELETED);
				this.logger.info(`upload: ${name} deleted by an admin`);
				return { name };
			}
			if (answers.some(a => a.error)) {
				this.logger.warn(`upload: delete of ${name}: no answer from ${answers.filter(a => a.error).map(a => a.node)}`);
				throw bizError("UNAVAILABLE");
			}
			throw bizError("UPLOAD_NOT_FOUND");
		},

		async unlinkStored(this: UploadThis, name: string): Promise<boolean> {
			try {
				await fsp.unlink(path.join(this.dir, name));
				return true;
			} catch (err) {
				if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
				this.logger.error(`upload: cannot remove a stored file: ${(err as NodeJS.ErrnoException).code}`);
				throw bizError("UPLOAD_SAVE_FAILED");
			}
		},

		/** One sweep at a time on a node: an on-demand call during a periodic one waits for it. */
		sweepOrphans(this: UploadThis): Promise<OrphanSweep> {
			this.orphanSweep ??= this.runOrphanSweep().finally(() => {
				this.orphanSweep = null;
			});
			return this.orphanSweep;
		},

		/**
		 * Stored files past the grace period (by mtime: when they were stored) are asked about in
		 * batches; the product actor's answer is the only reason a file goes, so without it
		 * nothing does. The directory is read as a stream: its size does not bound memory.
		 */
		async runOrphanSweep(this: UploadThis): Promise<OrphanSweep> {
			const graceMs = getConfig().upload.orphan_grace_hours * 3600_000;
			const out: OrphanSweep = { scanned: 0, old: 0, swept: 0 };
			let dir: fs.Dir;
			try {
				dir = await fsp.opendir(this.dir);
			} catch (err) {
				if ((err as NodeJS.ErrnoException).code === "ENOENT") return out; // nothing ever stored here
				throw err;
			}
			const sweep = async (names: string[]) => {
				const refs = new Set(
					await this.broker.call<string[], { names: string[] }>(
						"product.imageRefs",
						{ names },
						{ timeout: 10000, retries: 0 }
					)
				);
				for (const name of names) {
					if (refs.has(name) || !(await this.unlinkStored(name))) continue;
					out.swept++;
					this.broker.metrics.increment(ORPHANS_SWEPT);
				}
			};
			let batch: string[] = [];
			for await (const d of dir) {
				if (!d.isFile() || !STORED_NAME.test(d.name)) continue;
				out.scanned++;
				const st = await fsp.stat(path.join(this.dir, d.name)).catch(() => null);
				if (!st || Date.now() - st.mtimeMs <= graceMs) continue;
				out.old++;
				batch.push(d.name);
				if (batch.length >= ORPHAN_BATCH) {
					await sweep(batch);
					batch = [];
				}
			}
			if (batch.length) await sweep(batch);
			if (out.swept) this.logger.info(`upload: ${out.swept} orphan file(s) removed (of ${out.scanned} stored)`);
			return out;
		},

		/**
		 * A refused request: files still arriving are cut off (each removes its own staged
		 * file), then what was staged under the request's id is removed. It resolves once
		 * nothing of the request is left on disk, so the gateway answers only then.
		 */
		async discard(this: UploadThis, batch: string): Promise<void> {
			this.discarded.set(batch, Date.now() + DISCARDED_TTL_MS);
			const pending = [...(this.inflight.get(batch) ?? [])];
			for (const { stream } of pending) stream.destroy(new Error("upload request refused"));
			await Promise.allSettled(pending.map(p => p.done));
			let entries: string[] = [];
			try {
				entries = await fsp.readdir(this.incoming);
			} catch {
				return; // no upload ever reached this node
			}
			await Promise.allSettled(
				entries.filter(f => f.startsWith(`${batch}-`)).map(f => fsp.rm(path.join(this.incoming, f), { force: true }))
			);
		},

		async open(this: UploadThis, ctx: Context<unknown, Record<string, unknown>>, name: string): Promise<Readable> {
			const type = storedType(name);
			if (!type) throw bizError("UPLOAD_NOT_FOUND");
			const file = path.join(this.dir, name);
			let size: number;
			try {
				const st = await fsp.stat(file);
				if (!st.isFile()) throw new Error("not a file");
				size = st.size;
			} catch {
				throw bizError("UPLOAD_NOT_FOUND");
			}
			// Stored names are never reused, so a client or CDN may keep the file for good.
			ctx.meta.$responseType = type.contentType;
			ctx.meta.$responseHeaders = { "Content-Length": String(size), "Cache-Control": IMMUTABLE };
			return fs.createReadStream(file);
		},

		/** Staged files a crashed node left, and refused requests' ids past remembering. */
		async sweep(this: UploadThis): Promise<void> {
			const now = Date.now();
			for (const [batch, until] of this.discarded) if (until < now) this.discarded.delete(batch);
			let entries: string[];
			try {
				entries = await fsp.readdir(this.incoming);
			} catch {
				return;
			}
			for (const f of entries) {
				const file = path.join(this.incoming, f);
				const st = await fsp.stat(file).catch(() => null);
				if (st && now - st.mtimeMs > STALE_MS) await fsp.rm(file, { force: true }).catch(() => undefined);
			}
		}
	},

	created(this: UploadThis) {
		this.dir = path.resolve(getConfig().upload.dir);
		this.incoming = path.join(this.dir, ".incoming");
		this.dirReady = null;
		this.inflight = new Map();
		this.discarded = new Map();
		this.sweepTimer = null;
		this.orphanTimer = null;
		this.orphanSweep = null;
		const m = this.broker.metrics;
		counter(m, QUOTA_REFUSED, "Upload requests refused over a user's daily quota, by the limit passed", [
			{ limit: "files" },
			{ limit: "bytes" }
		]);
		counter(m, DELETED, "Stored uploads deleted by an admin");
		counter(m, ORPHANS_SWEPT, "Stored uploads no product referenced, removed past the grace period");
	},

	async started(this: UploadThis) {
		await this.sweep();
		this.sweepTimer = setInterval(() => void this.sweep().catch(() => undefined), SWEEP_INTERVAL_MS).unref();
		// Not at start: the product actor (maybe on another node) may not be known yet.
		const every = getConfig().upload.orphan_sweep_interval;
		if (every > 0)
			this.orphanTimer = setInterval(
				() =>
					void this.sweepOrphans().catch(err =>
						this.logger.warn(`upload: orphan sweep skipped, nothing removed (${(err as Error).name})`)
					),
				every * 1000
			).unref();
	},

	async stopped(this: UploadThis) {
		if (this.sweepTimer) clearInterval(this.sweepTimer);
		if (this.orphanTimer) clearInterval(this.orphanTimer);
		await this.orphanSweep?.catch(() => undefined);
	}
};

export default UploadService;
