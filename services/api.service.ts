import cluster from "node:cluster";
import type { AddressInfo } from "node:net";
import type { Context, ServiceSchema } from "moleculer";
import ApiGateway, { ApiSettingsSchema } from "moleculer-web";
import mysql from "mysql2/promise";
import { getConfig } from "../config";
import { resultEnvelope } from "../lib/contract/envelope";
import { TokenService } from "../lib/auth/jwt";
import { AmqpConnection } from "../lib/messaging/amqp";
import { AmqpLiveness } from "../lib/messaging/liveness";
import { parseByteLimit } from "../lib/http/body";
import { counter, gauge, labelSets } from "../lib/observability/metrics";
import { TurnMetrics } from "../lib/observability/turn-metrics";
import { SECKILL_PARAMS } from "../lib/domain/seckill";
import { QueuedItem, ResultItem, SECKILL_QUEUED_EVENT, SECKILL_RESULTS_EVENT } from "../lib/domain/seckill-results";
import { SaleFlagEvent, SoldOutFlags } from "../lib/domain/sold-out-flags";
import { createRedis } from "../lib/storage/redis";
import { closeListeners, listenShared } from "../lib/http/listen";
import { ReplyBatch } from "../lib/http/reply-batch";
import { RevokedSession, RevokedSessions } from "../lib/auth/sessions";
import { GcraRedis, LocalBuckets, SharedLimiter } from "../lib/http/ratelimit";
import { authMethods } from "./api/auth";
import { healthAliases, healthMethods } from "./api/health";
import { laneMethods } from "./api/lane";
import { limitMethods } from "./api/limits";
import { metricsAliases, observeMethods } from "./api/observe";
import { PAY_NOTIFY_PATH, payNotifyAliases } from "./api/payments";
import { responseMethods } from "./api/responses";
import { ResultStreams, streamMethods } from "./api/stream";
import { API_ALIASES } from "./api/routes";
import { swaggerAliases, swaggerMethods } from "./api/swagger";
import type { ApiThis, Req, Res } from "./api/types";
import { refuseUpload, UPLOAD_PATH, UPLOAD_ROUTES, uploadMethods } from "./api/uploads";

export type { Probe } from "./api/types";

const cfg = () => getConfig();
/** How often a gateway holding sold-out flags asks the stock actor which still hold (as stock nodes recheck theirs). */
const SOLD_OUT_RECHECK_MS = 2000;

/** A route's first step: this node's per-IP limit (services/api/limits.ts), before anything else. */
function limitLocally(this: ApiThis, _ctx: Context, _route: unknown, req: Req, res: Res): void {
	this.limitLocal(req, res);
}

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
		// No `use` middleware: every request begins in httpHandler (services/api/lane.ts).
		cors: {
			origin: cfg().http.cors_origins.includes("*") ? "*" : cfg().http.cors_origins,
			methods: ["GET", "POST", "PUT", "DELETE", "OPTIONS"],
			allowedHeaders: ["Content-Type", "Authorization", "Idempotency-Key", "X-Sale-Token"],
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
				onBeforeCall(
					this: ApiThis,
					ctx: Context<unknown, Record<string, unknown>>,
					_route: unknown,
					req: Req,
					res: Res
				) {
					this.limitLocal(req, res);
					// To the action as sent: the actions that take one check and apply it (order/writing.ts).
					const idempotencyKey = req.headers["idempotency-key"];
					if (idempotencyKey !== undefined) ctx.meta.idempotency_key = idempotencyKey;
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
				// Health, readiness, metrics and the API document are no cheaper to flood than the API.
				onBeforeCall: limitLocally,
				aliases: { ...healthAliases, ...swaggerAliases, ...metricsAliases }
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
				onBeforeCall: limitLocally,
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
				// The payment provider's notify: no token, and the body read as bytes, since its
				// signature covers them exactly (services/api/payments.ts).
				path: PAY_NOTIFY_PATH,
				mappingPolicy: "restrict",
				authentication: false,
				authorization: false,
				bodyParsers: { json: false, urlencoded: false },
				onBeforeCall: limitLocally,
				aliases: payNotifyAliases
			},
			{
				path: "/uploads",
				mappingPolicy: "restrict",
				authentication: false,
				authorization: false,
				bodyParsers: { json: false, urlencoded: false },
				onBeforeCall: limitLocally,
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

		/**
		 * Operators (gomall-nodes, gomall-seckill), on each gateway by nodeID: the flash-sale
		 * answers the lane gave itself (sold out, from the flag) and the flags it holds; the
		 * stock nodes' stock.node gives the rest.
		 */
		node: {
			visibility: "public",
			handler(this: ApiThis) {
				return {
					node_id: this.broker.nodeID,
					sold_out: [...this.soldOut].sort((a, b) => a - b),
					seckill: { sold_out: this.laneSoldOut }
				};
			}
		},

		/** The user actor, on every gateway, when sessions end (logout, a reused refresh token, a password change, a role change, a disabled account). */
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
			this.brokerStarted = true;
			// Not before the ended sessions are known: until then authenticated routes answer 503.
			this.ready = this.revocationsLoaded;
		},
		// A user actor that appears (a gateway started before it): load the list now, not at the next retry.
		"$services.changed"(this: ApiThis) {
			if (!this.revocationsLoaded) void this.syncRevocations();
		},
		"$gomall.draining"(this: ApiThis) {
			this.draining = true;
			// Their clients reconnect (the retry: hint) to a node that is not going away.
			this.endStreams();
		},
		// The stock actor's sold-out broadcasts: a sold-out product's requests skip the shared
		// limiter's Redis round trip (the stock actor answers them from memory anyway).
		"seckill.soldout"(this: ApiThis, ctx: Context<SaleFlagEvent>) {
			this.soldOut.soldOut(ctx.params.product_id, ctx.params.arming_id);
			if (this.streams.size) void this.streamsSoldOut(ctx.params.product_id);
		},
		// Pushed results (services/api/stream.ts): the stock actor's wins, the order actor's decisions.
		[SECKILL_QUEUED_EVENT](this: ApiThis, ctx: Context<{ items: QueuedItem[] }>) {
			this.streamsQueued(ctx.params.items);
		},
		[SECKILL_RESULTS_EVENT](this: ApiThis, ctx: Context<{ items: ResultItem[] }>) {
			this.streamsResults(ctx.params.items);
		},
		"seckill.available"(this: ApiThis, ctx: Context<{ product_id: number }>) {
			this.soldOut.available(ctx.params.product_id);
		},
		"seckill.armed"(this: ApiThis, ctx: Context<SaleFlagEvent>) {
			this.soldOut.armed(ctx.params.product_id, ctx.params.arming_id);
		}
	},

	methods: {
		...responseMethods,
		...authMethods,
		...limitMethods,
		...laneMethods,
		...uploadMethods,
		...healthMethods,
		...swaggerMethods,
		...observeMethods,
		...streamMethods,

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
		this.brokerStarted = false;
		this.draining = false;
		this.tokens = new TokenService(c.jwt.secret, c.jwt.expires_in, c.jwt.verify_cache_size);
		this.bodyLimit = parseByteLimit(c.http.body_limit);
		this.soldOut = new SoldOutFlags();
		this.soldOutRecheck = null;
		this.laneSoldOut = 0;
		this.checkSeckillParams = this.broker.validator!.compile(SECKILL_PARAMS as any) as ApiThis["checkSeckillParams"];
		this.turnMetrics = new TurnMetrics(this.broker.metrics);
		this.replies = c.http.batch_replies ? new ReplyBatch() : null;
		this.revoked = new RevokedSessions();
		this.revocationsLoaded = false;
		this.revocationTimer = null;
		this.streams = new ResultStreams();
		this.streamResync = null;
		this.redis = createRedis(c.redis, c.namespace, {}, "gomall-api");
		this.amqp = new AmqpConnection(c.amqp.url, this.logger, "gomall-api-health");
		this.amqpLiveness = new AmqpLiveness(this.amqp);
		this.healthLast = null;
		this.healthProbe = null;
		this.buckets = new LocalBuckets(c.rate_limit.local_max_keys);
		this.loginBuckets = new LocalBuckets(c.rate_limit.local_max_keys);
		this.trusted = new Set(c.http.trusted_proxies);
		this.limiterWarnedAt = 0;
		// Fail fast when Redis is away: no offline queue, no retries, a short timeout.
		this.sharedLimiter = new SharedLimiter(
			createRedis(
				c.rate_limit.redis_url ? { url: c.rate_limit.redis_url, cluster_nodes: [] } : c.redis,
				c.namespace,
				{ rateLimitGcra: { file: "ratelimit_gcra.lua" } },
				"gomall-ratelimit",
				{
					enableOfflineQueue: false,
					maxRetriesPerRequest: 0,
					commandTimeout: 500,
					// A tick's checks are one command already (SharedLimiter); this puts what several
					// ticks of one loop turn send in one write.
					enableAutoPipelining: true
				}
			) as GcraRedis
		);
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
			...labelSets({ layer: ["local"], tier: ["api", "login"] }),
			...labelSets({ layer: ["distributed"], tier: ["global", "api", "seckill", "seckill_token", "login"] })
		]);
		counter(m, "gomall_rate_limit_errors_total", "Rate-limit checks Redis could not answer");
		// The lane's own "sold out" answers (lane.ts); the stock actor registers the other results.
		counter(m, "gomall_seckill_requests_total", "Flash-sale requests by result", [{ result: "sold_out" }]);
		gauge(m, "gomall_seckill_streams", "Result streams (GET /api/seckill/result/stream) open on this process");
		counter(
			m,
			"gomall_seckill_streams_refused_total",
			"Result streams refused by their bounds (seckill.stream.per_user, seckill.stream.max)",
			labelSets({ reason: ["SECKILL_STREAM_USER_LIMIT", "SECKILL_STREAM_GATEWAY_FULL"] })
		);
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
		const amqpWait = Promise.race([connecting, new Promise(r => setTimeout(r, 2000).unref())]);
		// Meanwhile the ended sessions, before the first authenticated request is served (until
		// then those answer 503): where the user actor is here or known. On this node it may still
		// be starting, so a few tries (and the $services.changed event loads the list the moment
		// it registers). Otherwise (a gateway started before the user actor's node) the list is
		// loaded once a user actor appears; until then this node is not ready and refuses
		// authenticated requests (verifyBearer), since it cannot tell a live session's token from
		// one of a session ended within the last jwt.expires_in.
		let loaded = await this.syncRevocations();
		if (!loaded && this.broker.getLocalService("user")) {
			for (const end = Date.now() + 3000; !(loaded = this.revocationsLoaded || (await this.syncRevocations()));) {
				if (Date.now() >= end) break;
				await new Promise(r => setTimeout(r, 100));
			}
		}
		if (!loaded)
			this.logger.warn(
				"revoked sessions not loaded yet (no user actor answers): not ready, authenticated routes answer 503; retrying every second"
			);
		await amqpWait;
		this.soldOutRecheck = setInterval(() => void this.recheckSoldOut(), SOLD_OUT_RECHECK_MS);
		this.soldOutRecheck.unref();
		const resync = cfg().seckill.stream.resync_s;
		if (resync > 0) {
			this.streamResync = setInterval(() => void this.resyncStreams(), resync * 1000);
			this.streamResync.unref();
		}
		// Once more when every node has surely learnt of this one (its INFO reaches them some time
		// after it starts): a session ended in between was announced to the others only.
		this.scheduleRevocationSync(loaded ? cfg().broker.heartbeat_timeout * 1000 : 1000);
	},

	async stopped(this: ApiThis) {
		// Stop accepting first; accepted requests finish before the clients they use close.
		this.draining = true;
		if (this.revocationTimer) clearTimeout(this.revocationTimer);
		this.revocationTimer = null;
		// Open streams would hold the server's close until their clients leave.
		if (this.streamResync) clearInterval(this.streamResync);
		if (this.soldOutRecheck) clearInterval(this.soldOutRecheck);
		this.endStreams();
		const closed = closeListeners(this.server, this.listeners);
		this.server.closeIdleConnections();
		await closed;
		await this.amqpLiveness.stop();
		await Promise.allSettled([this.amqp.stop(), this.redis.quit(), this.sharedLimiter.redis.quit(), this.dbPool.end()]);
	}
};

export default ApiService;
