import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Context, Service, ServiceSchema } from "moleculer";
import ApiGateway, { ApiSettingsSchema } from "moleculer-web";
import mysql from "mysql2/promise";
import type Redis from "ioredis";
import { getConfig } from "../config";
import { Codes } from "../lib/codes";
import { bizError, isRejection } from "../lib/errors";
import { renderError, success } from "../lib/envelope";
import { AuthUser, ROLE_ADMIN, TokenService } from "../lib/jwt";
import { AmqpConnection } from "../lib/amqp";
import { createRedis } from "../lib/redis";
import type { GatewayPrometheusReporter } from "../moleculer.config";

type Req = IncomingMessage & { $action?: { auth?: "user" | "admin" }; $ctx?: Context; $route?: unknown };
type Res = ServerResponse;

export type Probe = "up" | "down" | "disabled";

interface ApiThis extends Service<ApiSettingsSchema> {
	tokens: TokenService;
	ready: boolean;
	draining: boolean;
	redis: Redis;
	amqp: AmqpConnection;
	dbPool: mysql.Pool;
	server: import("node:http").Server;
	sendError(req: Req, res: Res, err: unknown): void;
	sendJson(res: Res, status: number, body: unknown, traceId?: string | null): void;
	probeAll(): Promise<Record<string, Probe>>;
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
	return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error("probe timeout")), ms).unref())]);
}

const cfg = () => getConfig();

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
		use: [
			function securityHeaders(this: ApiThis, _req: Req, res: Res, next: () => void) {
				for (const [k, v] of SECURITY_HEADERS) res.setHeader(k, v);
				// While draining, keep-alive clients are told to reconnect (to another node).
				if (this.draining) res.setHeader("Connection", "close");
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
				aliases: {
					"POST /user/register": "user.register",
					"POST /user/login": "user.login",
					"GET /user/profile": "user.profile",

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
				},
				onAfterCall(this: ApiThis, ctx: Context<any, any>, _route: unknown, _req: Req, res: Res, data: unknown) {
					const traceId = ctx.requestID ?? null;
					if (traceId) res.setHeader("X-Trace-Id", traceId);
					if (isRejection(data)) {
						const def = Codes[data.$rejected];
						ctx.meta.$statusCode = def.http;
						return { code: def.biz, message: def.message, data: null, trace_id: traceId };
					}
					return success(data ?? null, traceId);
				},
				onError(this: ApiThis, req: Req, res: Res, err: unknown) {
					this.sendError(req, res, err);
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
							const status = components.database === "down" ? "unhealthy" : Object.values(components).includes("down") ? "degraded" : "healthy";
							this.sendJson(res, status === "unhealthy" ? 503 : 200, { status, components });
						});
					},
					"GET /ready"(this: ApiThis, _req: Req, res: Res) {
						const connected = !this.broker.transit || this.broker.transit.connected;
						const status = this.draining ? "draining" : this.ready && connected ? "ready" : "starting";
						this.sendJson(res, status === "ready" ? 200 : 503, { status });
					},
					"GET /metrics"(this: ApiThis, _req: Req, res: Res) {
						const reporter = (this.broker.metrics as any).reporter.find((r: unknown) => typeof (r as GatewayPrometheusReporter).generatePrometheusResponse === "function");
						res.writeHead(200, { "Content-Type": "text/plain; version=0.0.4; charset=utf-8" });
						res.end(reporter ? reporter.generatePrometheusResponse() : "");
					}
				},
				onError(this: ApiThis, req: Req, res: Res, err: unknown) {
					this.sendError(req, res, err);
				}
			}
		],
		onError(this: ApiThis, req: Req, res: Res, err: unknown) {
			this.sendError(req, res, err);
		}
	},

	events: {
		"$broker.started"(this: ApiThis) {
			this.ready = true;
		},
		"$gomall.draining"(this: ApiThis) {
			this.draining = true;
		}
	},

	methods: {
		/** Reads the Bearer token. A route whose action declares `auth` refuses a missing or bad one. */
		authenticate(this: ApiThis, _ctx: Context, _route: unknown, req: Req): AuthUser | null {
			const need: AuthLevel = req.$action?.auth;
			const header = req.headers.authorization;
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
			return verdict;
		},

		authorize(this: ApiThis, ctx: Context<any, { user?: AuthUser | null }>, _route: unknown, req: Req): void {
			if (req.$action?.auth === "admin" && ctx.meta.user?.role !== ROLE_ADMIN) throw bizError("NOT_ADMIN");
		},

		/** The only error writer: every failure leaves as the envelope with its HTTP status. */
		sendError(this: ApiThis, req: Req, res: Res, err: unknown): void {
			const traceId = req.$ctx?.requestID ?? null;
			const out = renderError(err, traceId);
			if (out.unexpected) {
				// Name and message only: a stack or a driver message may hold SQL or data.
				const e = err as { name?: string; message?: string };
				const message = e?.name?.startsWith("Sequelize") ? "(database error)" : e?.message;
				this.logger.error(`request failed: ${req.method} ${req.url?.split("?")[0]} ${e?.name ?? "Error"}: ${message} trace_id=${traceId}`);
			}
			if (res.headersSent) return;
			if (out.retryAfter) res.setHeader("Retry-After", String(out.retryAfter));
			this.sendJson(res, out.status, out.body, traceId);
		},

		/** moleculer-web logs 5xx with their stack; ours go through sendError without it. */
		errorHandler(this: ApiThis, req: Req, res: Res, err: unknown): void {
			(this as any).sendError(req, res, err);
		},

		sendJson(this: ApiThis, res: Res, status: number, body: unknown, traceId?: string | null): void {
			if (traceId) res.setHeader("X-Trace-Id", traceId);
			res.writeHead(status, { "Content-Type": "application/json; charset=utf-8" });
			res.end(JSON.stringify(body));
		},

		async probeAll(this: ApiThis): Promise<Record<string, Probe>> {
			const probe = (p: Promise<unknown>): Promise<Probe> => withTimeout(p, 1500).then(ok => (ok === false ? "down" : "up"), () => "down");
			const transit = this.broker.transit as any;
			const [database, redis, rabbitmq, nats] = await Promise.all([
				probe(this.dbPool.query("SELECT 1")),
				probe(this.redis.ping()),
				probe(this.amqp.probe()),
				transit ? probe(transit.connected ? transit.tx.client.flush() : Promise.resolve(false)) : Promise.resolve<Probe>("disabled")
			]);
			return { database, redis, rabbitmq, nats };
		},

		/** The port actually bound (tests listen on port 0). */
		port(this: ApiThis): number {
			return (this.server.address() as AddressInfo).port;
		}
	},

	created(this: ApiThis) {
		const c = cfg();
		this.ready = false;
		this.draining = false;
		this.tokens = new TokenService(c.jwt.secret, c.jwt.expires_in);
		this.redis = createRedis(c.redis.url, c.namespace, {}, "gomall-api");
		this.amqp = new AmqpConnection(c.amqp.url, this.logger, "gomall-api-health");
		this.dbPool = mysql.createPool({ host: c.db.host, port: c.db.port, user: c.db.user, password: c.db.password, database: c.db.name, connectionLimit: 2, connectTimeout: 1500 });
	},

	async started(this: ApiThis) {
		// Health reports RabbitMQ down until this connects; a broker that is down must not
		// hold the gateway's start-up for more than a moment.
		const connecting = this.amqp.start().catch(() => undefined);
		await Promise.race([connecting, new Promise(r => setTimeout(r, 2000).unref())]);
	},

	async stopped(this: ApiThis) {
		// Stop accepting first; accepted requests finish before the clients they use close.
		this.draining = true;
		if (this.server.listening) {
			const closed = new Promise<void>(resolve => this.server.close(() => resolve()));
			this.server.closeIdleConnections();
			await closed;
		}
		await Promise.allSettled([this.amqp.stop(), this.redis.quit(), this.dbPool.end()]);
	}
};

export default ApiService;
