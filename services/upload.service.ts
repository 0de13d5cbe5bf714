import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import type { Context, Service, ServiceSchema, ServiceSettingSchema } from "moleculer";
import { getConfig } from "../config";
import { bizError } from "../lib/contract/errors";
import {
	BATCH_ID,
	ImageType,
	newStoredName,
	SNIFF_BYTES,
	sniffImage,
	STORED_NAME,
	storedType
} from "../lib/domain/upload";

/** Staged files older than this belong to no live request (a node died mid-upload). */
const STALE_MS = 3600_000;
const SWEEP_INTERVAL_MS = 600_000;
/** How long a refused request's id is remembered, so a file of it still on its way is refused too. */
const DISCARDED_TTL_MS = 600_000;
const IMMUTABLE = "public, max-age=31536000, immutable";

export interface StagedFile {
	name: string;
	filename: string;
	size: number;
	content_type: string;
}

interface UploadThis extends Service {
	dir: string;
	incoming: string;
	dirReady: Promise<void> | null;
	inflight: Map<string, Set<{ stream: Readable; done: Promise<unknown> }>>;
	discarded: Map<string, number>;
	sweepTimer: NodeJS.Timeout | null;
	ensureDirs(): Promise<void>;
	staged(batch: string, name: string): string;
	stage(stream: Readable, batch: string, filename: string): Promise<StagedFile>;
	receive(stream: Readable, tmp: (type: ImageType) => string): Promise<{ type: ImageType; size: number; file: string }>;
	commit(batch: string, names: string[]): Promise<void>;
	discard(batch: string): Promise<void>;
	open(ctx: Context<unknown, Record<string, unknown>>, name: string): Promise<Readable>;
	sweep(): Promise<void>;
}

function batchOf(ctx: Context<unknown, { upload?: { batch?: unknown } }>): string {
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
 */
const UploadService: ServiceSchema<ServiceSettingSchema, Record<string, any>, Record<string, any>, UploadThis> = {
	name: "upload",

	actions: {
		save: {
			auth: "user",
			params: {
				$filename: { type: "string", optional: true },
				$$strict: "remove"
			},
			// A stream cannot be replayed: a retried call would read nothing.
			retryPolicy: { enabled: false },
			async handler(
				this: UploadThis,
				ctx: Context<{ $filename?: string }, { upload?: { batch?: unknown } }>
			): Promise<StagedFile> {
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
			handler(this: UploadThis, ctx: Context<{ batch: string; names: string[] }>): Promise<void> {
				return this.commit(ctx.params.batch, ctx.params.names);
			}
		},
		discard: {
			visibility: "public",
			params: { batch: { type: "string", pattern: BATCH_ID } },
			handler(this: UploadThis, ctx: Context<{ batch: string }>): Promise<void> {
				return this.discard(ctx.params.batch);
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

		/** All of a request's files, or none: a failed rename takes back the ones already moved. */
		async commit(this: UploadThis, batch: string, names: string[]): Promise<void> {
			const moved: string[] = [];
			try {
				for (const name of names) {
					const to = path.join(this.dir, name);
					await fsp.rename(this.staged(batch, name), to);
					moved.push(to);
				}
			} catch (err) {
				this.logger.error(
					`upload: cannot publish a staged file: ${(err as NodeJS.ErrnoException).code ?? (err as Error).name}`
				);
				await Promise.allSettled(
					[...moved, ...names.map(n => this.staged(batch, n))].map(f => fsp.rm(f, { force: true }))
				);
				throw bizError("UPLOAD_SAVE_FAILED");
			}
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
	},

	async started(this: UploadThis) {
		await this.sweep();
		this.sweepTimer = setInterval(() => void this.sweep().catch(() => undefined), SWEEP_INTERVAL_MS).unref();
	},

	stopped(this: UploadThis) {
		if (this.sweepTimer) clearInterval(this.sweepTimer);
	}
};

export default UploadService;
