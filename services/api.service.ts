import cluster from "node:cluster";
import fs from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import path from "node:path";
import type { AddressInfo, Server as NetServer } from "node:net";
import type { Context, Service, ServiceSchema } from "moleculer";
import ApiGateway, { ApiSettingsSchema } from "moleculer-web";
import mysql from "mysql2/promise";
import { getConfig } from "../config";
import { Codes } from "../lib/contract/codes";
import { bizError, isRejection } from "../lib/contract/errors";
import { renderError, success } from "../lib/contract/envelope";
import { AuthUser, ROLE_ADMIN, TokenService } from "../lib/auth/jwt";
import { AmqpConnection } from "../lib/messaging/amqp";
import { parseByteLimit, readJsonBody } from "../lib/http/body";
import { callEachNode } from "../lib/messaging/each-node";
import { counter, labelSets } from "../lib/observability/metrics";
import { createRedis, redisHealthy, RedisClient } from "../lib/storage/redis";
import { closeListeners, listenShared } from "../lib/http/listen";
import { ReplyBatch } from "../lib/http/reply-batch";
import { RevokedSession, RevokedSessions } from "../lib/auth/sessions";
import { PROJECT_ROOT } from "../config/paths";
import { ActionInfo, buildOpenApi, MultipartRoute } from "../lib/http/openapi";
import { isMultipart, newBatchId, uploadFailure } from "../lib/domain/upload";
import { checkDistributed, clientIp, DistributedCheck, GcraRedis, LocalBuckets, Verdict } from "../lib/http/ratelimit";
import type { GomallPrometheusReporter } from "../lib/observability/prometheus-reporter";

type Req = IncomingMessage & {
	$action?: { name?: string; auth?: "user" | "admin" };
	$ctx?: Context<unknown, { user?: AuthUser | null }>;
	$route?: unknown;
	$alias?: { fullPath?: string; path?: string };
	$clientIp?: string;
	$startedAt?: bigint;
	/** Set by the flash-sale lane, which has no `api.rest` context to carry them. */
	$traceId?: string;
	$userId?: number;
	/** An upload request whose files are streaming to the upload actor (see authorizeUpload). */
	$upload?: { batch: string; failing: boolean; settled: boolean };
};
type Res = ServerResponse;

export type Probe = "up" | "down" | "disabled";

interface ApiThis extends Service<ApiSettingsSchema> {
	tokens: TokenService;
	ready: boolean;
	draining: boolean;
	redis: RedisClient;
	amqp: AmqpConnection;
	dbPool: mysql.Pool;
	server: import("node:http").Server;
	/** the port's other listening sockets (lib/listen), whose connections `server` serves */
	listeners: NetServer[];
	createServer(): void;
	port(): number;
	sendError(req: Req, res: Res, err: unknown): void;
	serveSwagger(file: string, res: Res): void;
	buckets: LocalBuckets;
	limiterRedis: GcraRedis;
	trusted: Set<string>;
	limiterWarnedAt: number;
	refuse(res: Res, verdict: Verdict, layer: string, tier: string): never;
	limitLocal(req: Req, res: Res): void;
	verifyBearer(header: string | undefined, need: AuthLevel): AuthUser | null;
	limitDistributed(user: AuthUser | null | undefined, action: string | undefined, req: Req, res: Res): Promise<void>;
	beginRequest(req: Req, res: Res): void;
	seckillLane(req: Req, res: Res): Promise<void>;
	bodyLimit: number;
	soldOut: Set<number>;
	observe(req: Req, res: Res): void;
	sendJson(res: Res, status: number, body: unknown, traceId?: string | null, batched?: boolean): void;
	/** the flash-sale lane's answers, ended together per loop turn (null: http.batch_replies off) */
	replies: ReplyBatch | null;
	probeAll(): Promise<Record<string, Probe>>;
	revoked: RevokedSessions;
	revocationsLoaded: boolean;
	revocationTimer: NodeJS.Timeout | null;
	syncRevocations(): Promise<boolean>;
	scheduleRevocationSync(delayMs: number): void;
	authorize(ctx: Context<any, any>, route: unknown, req: Req, res: Res): Promise<void>;
	finishUpload(ctx: Context<any, any>, req: Req, res: Res, data: unknown): Promise<unknown>;
	failUpload(req: Req, res: Res, err: unknown): void;
	discardUpload(batch: string): Promise<unknown>;
}

/** Declared on an action (`auth: "user"` or `"admin"`); enforced here, in one place. */
type AuthLevel = "user" | "admin" | undefined;

const SECURITY_HEADERS: [string, string][] = [
	["X-Content-Type-Options", "nosniff"],
	["X-Frame-Options", "DENY"],
	["Referrer-Policy", "no-referrer"],
	["Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"],
	["Cross-Origin-Opener-Policy", "same-origin"]
];

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
	return Promise.race([
		p,
		new Promise<T>((_, reject) => setTimeout(() => reject(new Error("probe timeout")), ms).unref())
	]);
}

const cfg = () => getConfig();

/** The flash sale's lane: this exact request skips the generic route pipeline (seckillLane). */
const SECKILL_LANE = { method: "POST", url: "/api/seckill", action: "stock.seckill", auth: "user" as AuthLevel };
const SECKILL_ALIAS = Object.freeze({ fullPath: SECKILL_LANE.url });

/** The envelope and status of an action's result: data, or a returned rejection (lib/errors). */
function resultEnvelope(data: unknown, traceId: string | null): { status: number; body: unknown } {
	if (isRejection(data)) {
		const def = Codes[data.$rejected];
		return { status: def.http, body: { code: def.biz, message: def.message, data: null, trace_id: traceId } };
	}
	return { status: 200, body: success(data ?? null, traceId) };
}
const VERSION: string = JSON.parse(fs.readFileSync(path.join(PROJECT_ROOT, "package.json"), "utf8")).version;

/** The REST contract (SPEC): every /api route and the action behind it. */
const API_ALIASES: Record<string, string> = {
	"POST /user/register": "user.register",
	"POST /user/login": "user.login",
	"GET /user/profile": "user.profile",

	"POST /auth/refresh-token": "user.refresh",
	"POST /auth/logout": "user.logout",
	"POST /auth/change-password": "user.changePassword",

	"GET /product": "product.list",
	"GET /product/:id": "product.get",
	"POST /product": "product.create",
	"PUT /product/:id": "product.update",
	"DELETE /product/:id": "product.remove",

	"POST /cart": "cart.add",
	"GET /cart": "cart.list",
	"PUT /cart": "cart.update",
	"DELETE /cart/clear": "cart.clear",
	"DELETE /cart": "cart.remove",

	"POST /order/checkout": "order.checkout",
	"POST /order": "order.create",
	"GET /order": "order.list",
	"GET /order/:order_no": "order.get",
	"POST /order/:order_no/pay": "order.pay",
	"POST /order/:order_no/cancel": "order.cancel",

	"POST /seckill/init": "stock.init",
	"POST /seckill": "stock.seckill",
	"GET /seckill/result": "stock.result",
	"GET /seckill": "stock.list"
};

/**
 * Image uploads, multipart through moleculer-web: each file of the form is streamed to its
 * own `upload.save` call; the request's files are published together (finishUpload) or not
 * at all (failUpload). The upload actor owns the directory; GET /uploads/<name> streams back.
 */
const UPLOAD_PATH = "/api/upload";
const UPLOAD_ROUTES: Record<string, MultipartRoute> = {
	"POST /": { action: "upload.save", field: "file", maxFiles: 1 },
	"POST /multi": { action: "upload.save", field: "files", maxFiles: cfg().upload.max_files }
};
/** A form beyond this is refused from its Content-Length, before a byte of it is read. */
const UPLOAD_MAX_BODY = cfg().upload.max_files * cfg().upload.max_bytes + 1024 * 1024;
const refuseUpload =
	(key: "UPLOAD_TOO_MANY_FILES" | "UPLOAD_MALFORMED") => (busboy: { emit(event: string, err: unknown): void }) =>
		busboy.emit("error", bizError(key));

/** The public view of a stored file: `url` goes into a product's image_url. */
function publicFile(f: { name: string; filename: string; size: number; content_type: string }) {
	return { url: `/uploads/${f.name}`, name: f.name, filename: f.filename, size: f.size, content_type: f.content_type };
}

/** GET /version: the API's version (the Go version's keys) and this build's. */
const VERSION_INFO = Object.freeze({
	version: "v1",
	api_prefix: "/api",
	recommended_prefix: "/api",
	app_version: VERSION,
	build: cfg().build || null
});

const SWAGGER_DIR = path.dirname(require.resolve("swagger-ui-dist/package.json"));
/** The files of swagger-ui-dist the page needs; nothing else is served from that folder. */
const SWAGGER_FILES: Record<string, string> = {
	"swagger-ui.css": "text/css; charset=utf-8",
	"index.css": "text/css; charset=utf-8",
	"swagger-ui-bundle.js": "text/javascript; charset=utf-8",
	"swagger-ui-standalone-preset.js": "text/javascript; charset=utf-8",
	"favicon-32x32.png": "image/png",
	"favicon-16x16.png": "image/png"
};
/** Read once, on first request: the bundle is a few MB and never changes at run time. */
const swaggerCache = new Map<string, Buffer>();
const SWAGGER_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GoMall API</title>
<link rel="stylesheet" href="swagger-ui.css"><link rel="stylesheet" href="index.css">
<link rel="icon" type="image/png" href="favicon-32x32.png"></head>
<body><div id="swagger-ui"></div>
<script src="swagger-ui-bundle.js"></script><script src="swagger-ui-standalone-preset.js"></script>
<script src="swagger-initializer.js"></script></body></html>`;
const SWAGGER_INIT = `window.onload = function () {
  window.ui = SwaggerUIBundle({ url: "doc.json", dom_id: "#swagger-ui", deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout" });
};`;
/** Swagger UI needs its own scripts, styles and inline styles; still nothing from elsewhere. */
const SWAGGER_CSP =
	"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'";

/** Thrown for every refused request: made once, so a refusal costs no stack trace. */
const RATE_LIMITED = bizError("TOO_MANY_REQUESTS");
const SESSION_ENDED = bizError("TOKEN_INVALID", undefined, "session ended, log in again");

/**
 * The gateway actor: the REST contract of the SPEC over moleculer-web. Every response is the
 * envelope `{code, message, data, trace_id}`; success is wrapped in onAfterCall, every error
 * path (action errors, unknown routes, bad JSON, oversized bodies) goes through renderError.
 */
const ApiService: ServiceSchema<ApiSettingsSchema, Record<string, any>, Record<string, any>, ApiThis> = {
	name: "api",
	mixins: [ApiGateway],

	settings: {
		port: cfg().http.port,
		ip: cfg().http.host,
		// moleculer-web neither creates nor binds the server: created() creates it, started()
		// binds it through several sockets (lib/listen).
		server: false,
		use: [
			function securityHeaders(this: ApiThis, req: Req, res: Res, next: () => void) {
				this.beginRequest(req, res);
				next();
			}
		],
		cors: {
			origin: cfg().http.cors_origins.includes("*") ? "*" : cfg().http.cors_origins,
			methods: ["GET", "POST", "PUT", "DELETE", "OPTIONS"],
			allowedHeaders: ["Content-Type", "Authorization"],
			exposedHeaders: ["X-Trace-Id", "Retry-After"],
			maxAge: 3600
		},
		// Request logs are written by the gateway itself, without params (they may hold passwords).
		logRequest: null,
		logResponse: null,
		logRequestParams: null,
		logResponseData: null,
		log4XXResponses: false,
		httpServerTimeout: 30000,
		routes: [
			{
				path: "/api",
				mappingPolicy: "restrict",
				authentication: true,
				authorization: true,
				mergeParams: true,
				bodyParsers: { json: { limit: cfg().http.body_limit, strict: true }, urlencoded: false },
				// The cheap layer first: this node's per-IP bucket, before any token is verified.
				onBeforeCall(this: ApiThis, _ctx: Context, _route: unknown, req: Req, res: Res) {
					this.limitLocal(req, res);
				},
				aliases: API_ALIASES,
				onAfterCall(this: ApiThis, ctx: Context<any, any>, _route: unknown, _req: Req, res: Res, data: unknown) {
					const traceId = ctx.requestID ?? null;
					if (traceId) res.setHeader("X-Trace-Id", traceId);
					const out = resultEnvelope(data, traceId);
					if (out.status !== 200) ctx.meta.$statusCode = out.status;
					return out.body;
				}
			},
			{
				path: "/",
				mappingPolicy: "restrict",
				authentication: false,
				authorization: false,
				bodyParsers: { json: false, urlencoded: false },
				aliases: {
					"GET /health"(this: ApiThis, _req: Req, res: Res) {
						this.probeAll().then(components => {
							const status =
								components.database === "down"
									? "unhealthy"
									: Object.values(components).includes("down")
										? "degraded"
										: "healthy";
							this.sendJson(res, status === "unhealthy" ? 503 : 200, { status, components });
						});
					},
					"GET /version"(this: ApiThis, _req: Req, res: Res) {
						const traceId = this.broker.generateUid();
						this.sendJson(res, 200, success(VERSION_INFO, traceId), traceId);
					},
					"GET /ready"(this: ApiThis, _req: Req, res: Res) {
						const connected = !this.broker.transit || this.broker.transit.connected;
						const status = this.draining ? "draining" : this.ready && connected ? "ready" : "starting";
						this.sendJson(res, status === "ready" ? 200 : 503, { status });
					},
					"GET /swagger/:file"(this: ApiThis, req: Req & { $params?: { file?: string } }, res: Res) {
						this.serveSwagger(req.$params?.file ?? "", res);
					},
					"GET /metrics"(this: ApiThis, _req: Req, res: Res) {
						const reporter = (this.broker.metrics as any).reporter.find(
							(r: unknown) => typeof (r as GomallPrometheusReporter).generatePrometheusResponse === "function"
						);
						res.writeHead(200, { "Content-Type": "text/plain; version=0.0.4; charset=utf-8" });
						res.end(reporter ? reporter.generatePrometheusResponse() : "");
					}
				}
			},
			{
				path: UPLOAD_PATH,
				mappingPolicy: "restrict",
				authentication: true,
				authorization: "authorizeUpload",
				// busboy reads the body, file by file; nothing may consume it before.
				bodyParsers: { json: false, urlencoded: false },
				busboyConfig: {
					limits: {
						fileSize: cfg().upload.max_bytes,
						fields: 10,
						fieldSize: 1024,
						parts: cfg().upload.max_files + 10,
						headerPairs: 20
					},
					// busboy would skip the extra parts silently; refusing says why.
					onFilesLimit: refuseUpload("UPLOAD_TOO_MANY_FILES"),
					onPartsLimit: refuseUpload("UPLOAD_MALFORMED"),
					onFieldsLimit: refuseUpload("UPLOAD_MALFORMED")
				},
				onBeforeCall(this: ApiThis, _ctx: Context, _route: unknown, req: Req, res: Res) {
					this.limitLocal(req, res);
				},
				aliases: Object.fromEntries(
					Object.entries(UPLOAD_ROUTES).map(([route, r]) => [
						route,
						{ type: "multipart", action: r.action, busboyConfig: { limits: { files: r.maxFiles } } }
					])
				),
				onAfterCall(
					this: ApiThis | { service: ApiThis },
					ctx: Context<any, any>,
					_route: unknown,
					req: Req,
					res: Res,
					data: unknown
				) {
					// moleculer-web calls a multipart alias' onAfterCall with the alias as `this`.
					const svc = "service" in this ? this.service : this;
					return svc.finishUpload(ctx, req, res, data);
				}
			},
			{
				path: "/uploads",
				mappingPolicy: "restrict",
				authentication: false,
				authorization: false,
				bodyParsers: { json: false, urlencoded: false },
				onBeforeCall(this: ApiThis, _ctx: Context, _route: unknown, req: Req, res: Res) {
					this.limitLocal(req, res);
				},
				// The upload actor's answer is the file's stream, its type and cache headers.
				aliases: { "GET /:name": "upload.get" }
			}
		]
	},

	actions: {
		/**
		 * moleculer-web serves every HTTP request through this local action. Moleculer's retry
		 * must never replay it: the retry middleware re-runs the whole action when an error
		 * from the call it wraps is retryable, but by then the request's URL has been rewritten
		 * (the route prefix cut off) and its body consumed, so the replay matches no route and
		 * answered 404 "route not found" (this was every 404 of a stock node killed mid-sale),
		 * and it would have run the flash-sale reserve a second time. Retries belong to the
		 * inner call, where each action's retryPolicy decides what is safe to replay.
		 */
		// Nor does it get a breaker of its own: the errors raised on the gateway itself for any
		// route (no node for an action, an open breaker further in) would count against this
		// one handler. The breakers that matter are per actor and node, on the inner calls.
		rest: { retryPolicy: { enabled: false }, circuitBreaker: { enabled: false } },

		/** The user actor, on every gateway, when sessions end (logout, a reused refresh token, a password change). */
		revokeSessions: {
			visibility: "public",
			params: {
				sessions: {
					type: "array",
					max: 100000,
					items: {
						type: "object",
						strict: "remove",
						props: { sid: { type: "string", length: 32 }, until: { type: "number", integer: true } }
					}
				}
			},
			handler(this: ApiThis, ctx: Context<{ sessions: RevokedSession[] }>) {
				this.revoked.add(ctx.params.sessions);
				return { revoked: this.revoked.size };
			}
		}
	},

	events: {
		"$broker.started"(this: ApiThis) {
			this.ready = true;
		},
		"$gomall.draining"(this: ApiThis) {
			this.draining = true;
		},
		// The stock actor's sold-out broadcasts: a sold-out product's requests skip the shared
		// limiter's Redis round trip (the stock actor answers them from memory anyway).
		"seckill.soldout"(this: ApiThis, ctx: Context<{ product_id: number }>) {
			this.soldOut.add(ctx.params.product_id);
		},
		"seckill.available"(this: ApiThis, ctx: Context<{ product_id: number }>) {
			this.soldOut.delete(ctx.params.product_id);
		},
		"seckill.armed"(this: ApiThis, ctx: Context<{ product_id: number }>) {
			this.soldOut.delete(ctx.params.product_id);
		}
	},

	methods: {
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
		 * The HTTP server's handler. `POST /api/seckill` takes the lane; everything else goes
		 * through moleculer-web's route pipeline.
		 */
		httpHandler(this: ApiThis, req: Req, res: Res, next?: () => void) {
			if (req.url === SECKILL_LANE.url && req.method === SECKILL_LANE.method) return this.seckillLane(req, res);
			return (ApiGateway as any).methods.httpHandler.call(this, req, res, next);
		},

		/**
		 * The flash sale's hot path without the generic route pipeline (alias resolution, the
		 * `api.rest` context and its span, body-parser, parameter merging), which cost more than
		 * the sale itself. The contract is the same as every route's: security and CORS
		 * headers, the body limit, the local limit, the token, the shared limit, the action's
		 * own params validation, the envelope and status, metrics, the request log, the trace
		 * id (the action's context is the trace's root span). Errors go through sendError.
		 */
		async seckillLane(this: ApiThis, req: Req, res: Res): Promise<void> {
			this.beginRequest(req, res);
			(this as any).writeCorsHeaders(this.settings, req, res, true);
			req.$alias = SECKILL_ALIAS;
			const traceId = (req.$traceId = this.broker.generateUid());
			try {
				const body = await readJsonBody(req, this.bodyLimit);
				this.limitLocal(req, res);
				const user = this.verifyBearer(req.headers.authorization, SECKILL_LANE.auth)!;
				req.$userId = user.id;
				const params = typeof body === "object" && body !== null ? { ...body } : {};
				const rl = cfg().rate_limit;
				if (
					rl.enabled &&
					rl.distributed &&
					!this.soldOut.has(Number((params as { product_id?: unknown }).product_id))
				) {
					await this.limitDistributed(user, SECKILL_LANE.action, req, res);
				}
				const data = await this.broker.call(SECKILL_LANE.action, params, { meta: { user }, requestID: traceId });
				// A gateway that started after the broadcast learns "sold out" from the answer.
				if (isRejection(data) && data.$rejected === "SECKILL_SOLD_OUT")
					this.soldOut.add(Number((params as { product_id?: unknown }).product_id));
				const out = resultEnvelope(data, traceId);
				this.sendJson(res, out.status, out.body, traceId, true);
			} catch (err) {
				this.sendError(req, res, err);
			}
		},

		/** This node's per-IP token bucket: the cheap layer, before any token is verified. */
		limitLocal(this: ApiThis, req: Req, res: Res): void {
			const rl = cfg().rate_limit;
			req.$clientIp = clientIp(req.socket.remoteAddress, req.headers["x-forwarded-for"], this.trusted);
			if (!rl.enabled || !rl.local) return;
			const verdict = this.buckets.take(req.$clientIp, rl.api);
			if (!verdict.allowed) this.refuse(res, verdict, "local", "api");
		},

		/** Reads the Bearer token. A route whose action declares `auth` refuses a missing or bad one. */
		authenticate(this: ApiThis, _ctx: Context, _route: unknown, req: Req): AuthUser | null {
			return this.verifyBearer(req.headers.authorization, req.$action?.auth);
		},

		verifyBearer(this: ApiThis, header: string | undefined, need: AuthLevel): AuthUser | null {
			if (!header) {
				if (need) throw bizError("UNAUTHORIZED");
				return null;
			}
			const token = header.startsWith("Bearer ") ? header.slice(7).trim() : "";
			const verdict = token ? this.tokens.verify(token) : "TOKEN_INVALID";
			if (typeof verdict === "string") {
				if (need) throw bizError(verdict);
				return null;
			}
			// Also on the verify cache's hits: a session can end while its token is remembered.
			if (verdict.sid !== undefined && this.revoked.has(verdict.sid)) {
				if (need) throw SESSION_ENDED;
				return null;
			}
			return verdict;
		},

		async authorize(
			this: ApiThis,
			ctx: Context<any, { user?: AuthUser | null }>,
			_route: unknown,
			req: Req,
			res: Res
		): Promise<void> {
			if (req.$action?.auth === "admin" && ctx.meta.user?.role !== ROLE_ADMIN) throw bizError("NOT_ADMIN");
			const rl = cfg().rate_limit;
			if (rl.enabled && rl.distributed) await this.limitDistributed(ctx.meta.user, req.$action?.name, req, res);
		},

		/**
		 * The shared layer, after authentication so the flash sale can be limited per user:
		 * global, per IP, and per route (login per IP, seckill per user), one Redis round trip.
		 * If Redis cannot answer, the request goes through (or gets 503 with fail_open off),
		 * with a warning at most every 10 s and a metric; never a 500.
		 */
		async limitDistributed(
			this: ApiThis,
			user: AuthUser | null | undefined,
			action: string | undefined,
			req: Req,
			res: Res
		): Promise<void> {
			const rl = cfg().rate_limit;
			const ip = req.$clientIp ?? "";
			const checks: DistributedCheck[] = [
				{ key: "rl:global", tier: rl.global },
				{ key: `rl:api:${ip}`, tier: rl.api }
			];
			// Everything that checks a password or a refresh token is guessing's target: the login tier, per IP.
			if (action === "user.login" || action === "user.refresh" || action === "user.changePassword")
				checks.push({ key: `rl:login:${ip}`, tier: rl.login });
			else if (action === "stock.seckill" && user) checks.push({ key: `rl:seckill:${user.id}`, tier: rl.seckill });
			let verdict: Verdict;
			try {
				verdict = await checkDistributed(this.limiterRedis, checks);
			} catch (err) {
				this.broker.metrics.increment("gomall_rate_limit_errors_total");
				const now = Date.now();
				if (now - this.limiterWarnedAt > 10000) {
					this.limiterWarnedAt = now;
					this.logger.warn(
						`rate limiter: Redis unavailable (${(err as Error).message}); ${rl.fail_open ? "letting requests through" : "refusing requests"}`
					);
				}
				if (!rl.fail_open) throw bizError("UNAVAILABLE");
				return;
			}
			if (!verdict.allowed)
				this.refuse(res, verdict, "distributed", checks.length > 2 ? checks[2].key.split(":")[1] : "api");
		},

		refuse(this: ApiThis, res: Res, verdict: Verdict, layer: string, tier: string): never {
			this.broker.metrics.increment("gomall_rate_limit_rejected_total", { layer, tier });
			res.setHeader("Retry-After", String(Math.max(1, Math.ceil(verdict.retryAfterMs / 1000))));
			throw RATE_LIMITED;
		},

		/** One metric sample and one log line per request, once the response is sent. */
		observe(this: ApiThis, req: Req, res: Res): void {
			const route = req.$alias?.fullPath ?? (req.url?.startsWith("/api") ? "unmatched" : (req.url ?? "").split("?")[0]);
			const labels = { method: req.method ?? "", route, status: res.statusCode };
			const seconds = Number(process.hrtime.bigint() - (req.$startedAt ?? process.hrtime.bigint())) / 1e9;
			this.broker.metrics.increment("gomall_http_requests_total", labels);
			this.broker.metrics.observe("gomall_http_request_duration_seconds", seconds, labels);
			if (cfg().log.requests) {
				const ctx = req.$ctx;
				// Never the headers, the body or the query: they hold tokens and passwords.
				this.logger.info(
					`${req.method} ${route} ${res.statusCode} ${(seconds * 1000).toFixed(1)}ms trace_id=${req.$traceId ?? ctx?.requestID ?? "-"} user_id=${req.$userId ?? ctx?.meta.user?.id ?? "-"} ip=${req.$clientIp ?? req.socket.remoteAddress ?? "-"}`
				);
			}
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

		/**
		 * The upload route's authorization: the usual checks, then a multipart body of a
		 * bounded size; from here on the request's files stream to the upload actor, staged
		 * under the request's id (in ctx.meta, which every per-file call inherits).
		 */
		async authorizeUpload(this: ApiThis, ctx: Context<any, any>, route: unknown, req: Req, res: Res): Promise<void> {
			await this.authorize(ctx, route, req, res);
			if (!isMultipart(req.headers["content-type"])) throw bizError("UPLOAD_NOT_MULTIPART");
			if (Number(req.headers["content-length"]) > UPLOAD_MAX_BODY) throw bizError("UPLOAD_TOO_LARGE");
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
			void this.discardUpload(up.batch).finally(() => {
				up.settled = true;
				if (!res.destroyed) this.sendError(req, res, uploadFailure(err));
			});
		},

		/** Every node running the upload actor: the files of one request may have gone to several. */
		discardUpload(this: ApiThis, batch: string): Promise<unknown> {
			return callEachNode(this.broker, "upload", "upload.discard", { batch }, 10000);
		},

		/** moleculer-web logs 5xx with their stack; ours go through sendError without it. */
		errorHandler(this: ApiThis, req: Req, res: Res, err: unknown): void {
			(this as any).sendError(req, res, err);
		},

		/** `batched`: ended with the turn's other answers (lib/reply-batch), when http.batch_replies is on. */
		sendJson(this: ApiThis, res: Res, status: number, body: unknown, traceId?: string | null, batched = false): void {
			if (traceId) res.setHeader("X-Trace-Id", traceId);
			res.writeHead(status, { "Content-Type": "application/json; charset=utf-8" });
			const text = JSON.stringify(body);
			if (batched && this.replies) this.replies.end(res, text);
			else res.end(text);
		},

		async probeAll(this: ApiThis): Promise<Record<string, Probe>> {
			const probe = (p: Promise<unknown>): Promise<Probe> =>
				withTimeout(p, 1500).then(
					ok => (ok === false ? "down" : "up"),
					() => "down"
				);
			const transit = this.broker.transit as any;
			const [database, redis, rabbitmq, nats] = await Promise.all([
				probe(this.dbPool.query("SELECT 1")),
				probe(redisHealthy(this.redis)),
				probe(this.amqp.probe()),
				transit
					? probe(transit.connected ? transit.tx.client.flush() : Promise.resolve(false))
					: Promise.resolve<Probe>("disabled")
			]);
			return { database, redis, rabbitmq, nats };
		},

		/** The OpenAPI document from the aliases and the params schemas of the actions now known. */
		openApiDocument(this: ApiThis) {
			const actions = new Map<string, ActionInfo>();
			for (const a of this.broker.registry.getActionList({ skipInternal: true, withEndpoints: false }) as any[]) {
				actions.set(a.name, { params: a.action?.params, auth: a.action?.auth });
			}
			return buildOpenApi("/api", API_ALIASES, actions, VERSION, { base: UPLOAD_PATH, routes: UPLOAD_ROUTES });
		},

		serveSwagger(this: ApiThis, file: string, res: Res) {
			res.setHeader("Content-Security-Policy", SWAGGER_CSP);
			if (file === "doc.json") return this.sendJson(res, 200, (this as any).openApiDocument());
			const send = (type: string, body: string | Buffer) => {
				res.writeHead(200, { "Content-Type": type, "Cache-Control": "public, max-age=3600" });
				res.end(body);
			};
			if (file === "index.html" || file === "") return send("text/html; charset=utf-8", SWAGGER_HTML);
			if (file === "swagger-initializer.js") return send("text/javascript; charset=utf-8", SWAGGER_INIT);
			const type = SWAGGER_FILES[file];
			if (!type) return this.sendError({} as Req, res, bizError("NOT_FOUND"));
			let body = swaggerCache.get(file);
			if (!body) swaggerCache.set(file, (body = fs.readFileSync(path.join(SWAGGER_DIR, file))));
			send(type, body);
		},

		/**
		 * Loads the sessions ended recently from the user actor: at start, and then every
		 * jwt.revocation_sync_interval, which repairs a broadcast missed while this node was cut
		 * off. True when the list was loaded.
		 */
		async syncRevocations(this: ApiThis): Promise<boolean> {
			// Not known yet: no call (Moleculer would log each one that finds no service).
			if (!this.broker.registry.getServiceList({ onlyAvailable: true }).some(s => s.name === "user")) return false;
			try {
				this.revoked.add(
					await this.broker.call<RevokedSession[], Record<string, never>>(
						"user.revokedSessions",
						{},
						{ retries: 0, timeout: 5000 }
					)
				);
				if (!this.revocationsLoaded)
					this.logger.info(`revoked sessions loaded (${this.revoked.size} within their tokens' lifetime)`);
				this.revocationsLoaded = true;
				return true;
			} catch (err) {
				if (this.revocationsLoaded)
					this.logger.warn(`could not reload the revoked sessions (${(err as Error).name}); retrying`);
				return false;
			}
		},

		scheduleRevocationSync(this: ApiThis, delayMs: number): void {
			this.revocationTimer = setTimeout(async () => {
				const ok = await this.syncRevocations();
				if (this.revocationTimer) this.scheduleRevocationSync(ok ? cfg().jwt.revocation_sync_interval * 1000 : 1000);
			}, delayMs);
			this.revocationTimer.unref();
		},

		/** The port actually bound (tests listen on port 0). */
		port(this: ApiThis): number {
			return (this.server.address() as AddressInfo).port;
		}
	},

	created(this: ApiThis) {
		const c = cfg();
		this.createServer();
		this.server.on("error", err =>
			this.logger.error(`HTTP server error: ${(err as NodeJS.ErrnoException).code ?? err.message}`)
		);
		this.listeners = [];
		this.ready = false;
		this.draining = false;
		this.tokens = new TokenService(c.jwt.secret, c.jwt.expires_in, c.jwt.verify_cache_size);
		this.bodyLimit = parseByteLimit(c.http.body_limit);
		this.soldOut = new Set();
		this.replies = c.http.batch_replies ? new ReplyBatch() : null;
		this.revoked = new RevokedSessions();
		this.revocationsLoaded = false;
		this.revocationTimer = null;
		this.redis = createRedis(c.redis, c.namespace, {}, "gomall-api");
		this.amqp = new AmqpConnection(c.amqp.url, this.logger, "gomall-api-health");
		this.buckets = new LocalBuckets(c.rate_limit.local_max_keys);
		this.trusted = new Set(c.http.trusted_proxies);
		this.limiterWarnedAt = 0;
		// Fail fast when Redis is away: no offline queue, no retries, a short timeout.
		this.limiterRedis = createRedis(
			c.rate_limit.redis_url ? { url: c.rate_limit.redis_url, cluster_nodes: [] } : c.redis,
			c.namespace,
			{ rateLimitGcra: { file: "ratelimit_gcra.lua", numberOfKeys: 1 } },
			"gomall-ratelimit",
			{
				enableOfflineQueue: false,
				maxRetriesPerRequest: 0,
				commandTimeout: 500
			}
		) as GcraRedis;
		const m = this.broker.metrics;
		if (!m.getMetric("gomall_http_requests_total")) {
			m.register({
				name: "gomall_http_requests_total",
				type: "counter",
				labelNames: ["method", "route", "status"],
				description: "HTTP requests by method, route pattern and status"
			});
			m.register({
				name: "gomall_http_request_duration_seconds",
				type: "histogram",
				labelNames: ["method", "route", "status"],
				buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
				description: "HTTP request duration in seconds"
			});
		}
		counter(m, "gomall_rate_limit_rejected_total", "Requests refused by the rate limiter", [
			{ layer: "local", tier: "api" },
			...labelSets({ layer: ["distributed"], tier: ["global", "api", "seckill", "login"] })
		]);
		counter(m, "gomall_rate_limit_errors_total", "Rate-limit checks Redis could not answer");
		this.dbPool = mysql.createPool({
			host: c.db.host,
			port: c.db.port,
			user: c.db.user,
			password: c.db.password,
			database: c.db.name,
			connectionLimit: 2,
			connectTimeout: 1500
		});
	},

	async started(this: ApiThis) {
		// Workers of one node share the port; their supervisor checked it is free (scripts/gomall.ts).
		const sockets = cfg().http.listen_sockets;
		this.listeners = await listenShared(this.server, {
			port: this.settings.port!,
			host: this.settings.ip!,
			sockets,
			checkFree: !cluster.isWorker
		});
		this.logger.info(
			`API Gateway listening on http://${this.settings.ip}:${this.port()} (${sockets} socket${sockets > 1 ? "s" : ""})`
		);
		// Health reports RabbitMQ down until this connects; a broker that is down must not
		// hold the gateway's start-up for more than a moment.
		const connecting = this.amqp.start().catch(() => undefined);
		await Promise.race([connecting, new Promise(r => setTimeout(r, 2000).unref())]);
		// Ended sessions before the first request where the user actor is here or known: on this
		// node it may still be starting, so a few tries. Otherwise (a gateway started before the
		// user actor's node) serving does not wait for it; the list is loaded once it can be,
		// and until then the tokens of sessions ended within the last jwt.expires_in pass here.
		let loaded = await this.syncRevocations();
		if (!loaded && this.broker.getLocalService("user")) {
			for (const end = Date.now() + 3000; !(loaded = await this.syncRevocations()) && Date.now() < end;)
				await new Promise(r => setTimeout(r, 100));
		}
		if (!loaded) this.logger.warn("revoked sessions not loaded yet (no user actor answers); retrying every second");
		// Once more when every node has surely learnt of this one (its INFO reaches them some time
		// after it starts): a session ended in between was announced to the others only.
		this.scheduleRevocationSync(loaded ? cfg().broker.heartbeat_timeout * 1000 : 1000);
	},

	async stopped(this: ApiThis) {
		// Stop accepting first; accepted requests finish before the clients they use close.
		this.draining = true;
		if (this.revocationTimer) clearTimeout(this.revocationTimer);
		this.revocationTimer = null;
		const closed = closeListeners(this.server, this.listeners);
		this.server.closeIdleConnections();
		await closed;
		await Promise.allSettled([this.amqp.stop(), this.redis.quit(), this.limiterRedis.quit(), this.dbPool.end()]);
	}
};

export default ApiService;
