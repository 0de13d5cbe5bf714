import type { IncomingMessage, Server as HttpServer, ServerResponse } from "node:http";
import type { Server as NetServer } from "node:net";
import type { Context, Service } from "moleculer";
import type { ApiSettingsSchema } from "moleculer-web";
import type { Pool } from "mysql2/promise";
import type { AuthUser, TokenService } from "../../lib/auth/jwt";
import type { RevokedSessions } from "../../lib/auth/sessions";
import type { ReplyBatch } from "../../lib/http/reply-batch";
import type { TurnMetrics } from "../../lib/observability/turn-metrics";
import type { LocalBuckets, SharedLimiter, Verdict } from "../../lib/http/ratelimit";
import type { AmqpConnection } from "../../lib/messaging/amqp";
import type { AmqpLiveness } from "../../lib/messaging/liveness";
import type { RedisClient } from "../../lib/storage/redis";
import type { QueuedItem, ResultItem, StreamState } from "../../lib/domain/seckill-results";
import type { SoldOutFlags } from "../../lib/domain/sold-out-flags";
import type { ResultStream, ResultStreams } from "./stream";

export type Req = IncomingMessage & {
	$action?: { name?: string; auth?: "user" | "admin" };
	$ctx?: Context<unknown, { user?: AuthUser | null }>;
	$route?: unknown;
	$alias?: { fullPath?: string; path?: string };
	/** The path without its query (moleculer-web's, set before the alias is resolved). */
	parsedUrl?: string;
	$clientIp?: string;
	$startedAt?: bigint;
	/** Set by the flash-sale lane, which has no `api.rest` context to carry them. */
	$traceId?: string;
	$userId?: number;
	/** An upload request whose files are streaming to the upload actor (see authorizeUpload). */
	$upload?: { batch: string; failing: boolean; settled: boolean };
};
export type Res = ServerResponse;

export type Probe = "up" | "down" | "disabled";

/** Declared on an action (`auth: "user"` or `"admin"`); enforced here, in one place. */
export type AuthLevel = "user" | "admin" | undefined;

/**
 * The gateway as its methods see it: its state (set in created), the methods of moleculer-web
 * it calls, and its own methods, one group per file of this folder.
 */
export interface ApiThis extends Service<ApiSettingsSchema> {
	// State, set in created().
	tokens: TokenService;
	/** /ready's verdict: the broker has started and the ended sessions have been loaded once */
	ready: boolean;
	/** the $broker.started event has come */
	brokerStarted: boolean;
	draining: boolean;
	redis: RedisClient;
	amqp: AmqpConnection;
	/** RabbitMQ's answer on one long-lived channel of `amqp`, for /health */
	amqpLiveness: AmqpLiveness;
	/** the last /health probe's result and when it started (performance.now()), and the probe in flight */
	healthLast: { at: number; components: Record<string, Probe> } | null;
	healthProbe: Promise<Record<string, Probe>> | null;
	dbPool: Pool;
	server: HttpServer;
	/** the port's other listening sockets (lib/listen), whose connections `server` serves */
	listeners: NetServer[];
	buckets: LocalBuckets;
	/** the login tier's per-IP buckets on this node, kept whatever rate_limit.local and .distributed say */
	loginBuckets: LocalBuckets;
	sharedLimiter: SharedLimiter;
	trusted: Set<string>;
	limiterWarnedAt: number;
	bodyLimit: number;
	/** products the stock actor broadcast sold out: the lane answers them itself (lane.ts) */
	soldOut: SoldOutFlags;
	soldOutRecheck: NodeJS.Timeout | null;
	/** the lane's own sold-out answers on this process (api.node) */
	laneSoldOut: number;
	/** stock.seckill's params check (lib/domain/seckill SECKILL_PARAMS), compiled once */
	checkSeckillParams: (params: Record<string, unknown>) => true | unknown[] | Promise<true | unknown[]>;
	/** the request metrics, handed to the registry once per loop turn */
	turnMetrics: TurnMetrics;
	/** the flash-sale lane's answers, ended together per loop turn (null: http.batch_replies off) */
	replies: ReplyBatch | null;
	revoked: RevokedSessions;
	/** the ended sessions were loaded once: until then authenticated requests are refused (503) */
	revocationsLoaded: boolean;
	revocationTimer: NodeJS.Timeout | null;
	/** the open result streams of this process (stream.ts) */
	streams: ResultStreams;
	streamResync: NodeJS.Timeout | null;

	// moleculer-web's own methods.
	createServer(): void;
	writeCorsHeaders(route: Pick<ApiSettingsSchema, "cors">, req: Req, res: Res, isPreFlight: boolean): void;
	/** moleculer-web's alias lookup: false when no alias matches */
	resolveAlias(url: string, method?: string): { alias: { fullPath: string } } | false;

	// The server (api.service.ts).
	port(): number;

	// responses.ts
	beginRequest(req: Req, res: Res): void;
	sendJson(res: Res, status: number, body: unknown, traceId?: string | null, batched?: boolean): void;
	sendError(req: Req, res: Res, err: unknown): void;
	errorHandler(req: Req, res: Res, err: unknown): void;

	// lane.ts
	httpHandler(req: Req, res: Res, next?: () => void): Promise<void>;
	seckillLane(req: Req, res: Res): Promise<void>;
	laneSoldOutAnswer(req: Req, res: Res): void;
	laneSpan(req: Req, status: number, result: string, err?: unknown): void;
	recheckSoldOut(): Promise<void>;

	// stream.ts
	resultStream(req: Req, res: Res): Promise<void>;
	openStream(req: Req, s: ResultStream): ResultStream;
	closeStream(req: Req, s: ResultStream): void;
	endStreams(): void;
	applyStreamState(s: ResultStream, state: StreamState, soldOut: boolean): void;
	streamsQueued(items: QueuedItem[]): void;
	streamsResults(items: ResultItem[]): void;
	streamsSoldOut(productId: number): Promise<void>;
	resyncStreams(): Promise<void>;
	recheckRead(
		productId: number,
		userIds: number[],
		attempt?: number
	): Promise<{ sold_out: boolean; states: StreamState[] }>;

	// auth.ts
	authenticate(ctx: Context, route: unknown, req: Req, res: Res): AuthUser | null;
	verifyBearer(header: string | undefined, need: AuthLevel, res?: Res): AuthUser | null;
	authorize(ctx: Context<any, any>, route: unknown, req: Req, res: Res): Promise<void>;
	syncRevocations(): Promise<boolean>;
	scheduleRevocationSync(delayMs: number): void;

	// limits.ts
	limitLocal(req: Req, res: Res): void;
	limitDistributed(user: AuthUser | null | undefined, action: string | undefined, req: Req, res: Res): Promise<void>;
	refuse(res: Res, verdict: Verdict, layer: string, tier: string): never;

	// uploads.ts
	authorizeUpload(ctx: Context<any, any>, route: unknown, req: Req, res: Res): Promise<void>;
	finishUpload(ctx: Context<any, any>, req: Req, res: Res, data: unknown): Promise<unknown>;
	failUpload(req: Req, res: Res, err: unknown): void;
	discardUpload(batch: string): Promise<unknown>;

	// health.ts
	health(): Promise<Record<string, Probe>>;
	probeAll(): Promise<Record<string, Probe>>;
	probeConsumers(): Promise<Probe>;

	// swagger.ts
	openApiDocument(): Record<string, unknown>;
	serveSwagger(file: string, res: Res): void;

	// observe.ts
	observe(req: Req, res: Res): void;
	routeLabel(req: Req): string;
}
