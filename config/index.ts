import fs from "node:fs";
import Validator from "fastest-validator";
import defaults from "./default.json";
import dev from "./dev.json";
import prod from "./prod.json";
import test from "./test.json";

export type EnvName = "dev" | "prod" | "test";

export interface RateTier {
	rate: number;
	burst: number;
}

export interface Config {
	env: EnvName;
	namespace: string;
	node_id: string;
	http: {
		port: number;
		host: string;
		listen_sockets: number;
		batch_replies: boolean;
		body_limit: string;
		cors_origins: string[];
		trusted_proxies: string[];
	};
	db: {
		host: string;
		port: number;
		user: string;
		password: string;
		name: string;
		pool_max: number;
		/** longest a statement may run before the server ends it (MariaDB max_statement_time); 0: no limit */
		statement_timeout_ms: number;
	};
	redis: RedisConfig;
	amqp: {
		url: string;
		prefetch: number;
		retry_delays_ms: number[];
		/** how long a publisher waits for the broker's confirm; then the outcome is unknown (a memory or disk alarm blocks publishers) */
		confirm_timeout_ms: number;
	};
	nats: { url: string };
	jwt: {
		secret: string;
		/** seconds an access token lives: also how long a revoked session is remembered by the gateways */
		expires_in: number;
		/** seconds a refresh token lives; each refresh issues a new one */
		refresh_expires_in: number;
		verify_cache_size: number;
		/** seconds between a gateway's reloads of revoked sessions (catching up on broadcasts it missed) */
		revocation_sync_interval: number;
	};
	bcrypt: { cost: number };
	admin: { username: string; password: string };
	log: { level: LogLevel; format: "json" | "pretty"; output: "stdout" | "file"; file: string; requests: boolean };
	broker: {
		request_timeout: number;
		/** seconds between a node's heartbeats, and without one before peers drop it */
		heartbeat_interval: number;
		heartbeat_timeout: number;
		retry: { enabled: boolean; retries: number; delay: number; max_delay: number };
		circuit_breaker: {
			enabled: boolean;
			threshold: number;
			min_request_count: number;
			window_time: number;
			half_open_time: number;
		};
		bulkhead: { enabled: boolean; concurrency: number; max_queue_size: number };
	};
	shutdown: { drain_delay: number; timeout: number };
	cache: { product_ttl: number };
	/** 0: /metrics only on a gateway node's API port; else every node also serves it on this port */
	metrics: { port: number };
	order: { pay_timeout: number; sweep_interval: number };
	/** how orders are paid (SPEC "Payments"): direct completes at once (dev, test); wechat is WeChat Pay API v3 Native */
	pay: {
		provider: "direct" | "wechat";
		wechat: {
			/** https://api.mch.weixin.qq.com, or the simulator's address (scripts/wechat-sim.ts) */
			base_url: string;
			mchid: string;
			appid: string;
			/** the merchant API certificate's serial number */
			serial_no: string;
			/** the merchant's RSA private key (PEM) */
			private_key_path: string;
			/** 32 bytes: decrypts notifies (AEAD_AES_256_GCM) */
			apiv3_key: string;
			/** the WeChat Pay platform public key or certificate (PEM): verifies answers and notifies */
			platform_public_key_path: string;
			/** that key's serial: when set, a notify or answer signed under another Wechatpay-Serial is refused */
			platform_serial: string;
			/** where WeChat Pay sends notifies: this mall's POST /api/pay/wechat/notify */
			notify_url: string;
		};
	};
	seckill: {
		reconcile_interval: number;
		reconcile_age: number;
		max_deliveries: number;
		batch_size: number;
		/**
		 * ms at most that the order drain holds its messages while a stock actor in the same
		 * process is reserving (0: never): the sale's opening first, its orders after, in bigger batches
		 */
		batch_hold_ms: number;
		/**
		 * reservations one stock node runs at once (stock.seckill's own bulkhead; more wait in its
		 * queue, up to broker.bulkhead.max_queue_size)
		 */
		concurrency: number;
		/** seconds a sale token (GET /api/seckill/token) may be spent in */
		token_ttl_s: number;
		/** seconds a captcha (GET /api/seckill/captcha) may be answered in */
		captcha_ttl_s: number;
		/** pushed results (GET /api/seckill/result/stream), per gateway process */
		stream: {
			/** seconds between `: ping` comments, which keep proxies from closing a quiet stream */
			heartbeat_s: number;
			/** the `retry:` hint: how long a client's EventSource waits before reconnecting */
			retry_ms: number;
			/** open streams one user may hold on one gateway process */
			per_user: number;
			/** open streams one gateway process holds at most */
			max: number;
			/** seconds between re-reads of the undecided streams' states, in case a push was missed (0: never) */
			resync_s: number;
		};
	};
	rate_limit: {
		enabled: boolean;
		/** the per-IP token bucket in each gateway process */
		local: boolean;
		/** the GCRA limits in Redis shared by every gateway node */
		distributed: boolean;
		/** Redis for the distributed limits; empty: redis.url */
		redis_url: string;
		fail_open: boolean;
		local_max_keys: number;
		global: RateTier;
		api: RateTier;
		seckill: RateTier;
		/** sale tokens and captchas (GET /api/seckill/token, /captcha), per user */
		seckill_token: RateTier;
		login: RateTier;
	};
	tracing: {
		enabled: boolean;
		otlp_endpoint: string;
		service_name: string;
		/**
		 * the share (0-1) of the flash-sale lane's own "sold out" and limit answers that get a span;
		 * errors, 5xx and every request reaching stock.seckill are always traced (services/api/lane.ts)
		 */
		lane_sample_rate: number;
	};
	/** image uploads, owned by the upload actor: its directory (relative: to the working directory) and limits */
	upload: {
		dir: string;
		max_bytes: number;
		max_files: number;
		/** files one user (not an admin) may store per UTC day, counted in Redis across nodes; 0: no limit */
		quota_files_per_day: number;
		/** bytes one user (not an admin) may store per UTC day; 0: no limit */
		quota_bytes_per_day: number;
		/** hours a stored file no product references is kept before the orphan sweep removes it */
		orphan_grace_hours: number;
		/** seconds between an upload node's orphan sweeps; 0: only on demand (upload.sweepOrphans) */
		orphan_sweep_interval: number;
	};
	/** the build's id (a git commit, a CI build number), shown by GET /version; empty: unknown */
	build: string;
}

export interface RedisConfig {
	/** one Redis (used when cluster_nodes is empty) */
	url: string;
	/** Redis Cluster seed nodes, `host:port` or `redis://host:port`; set: every Redis user goes through ioredis' Cluster client */
	cluster_nodes: string[];
	/** replicas that must hold a flash-sale reservation (Redis WAIT) before the buyer is told "queued"; 0: no wait */
	wait_replicas: number;
	/** how long WAIT may take; when fewer replicas answer, the reservation is released and the buyer asked to retry */
	wait_timeout_ms: number;
	/** how long a command of the actors' Redis clients may take before it fails (its outcome unknown) */
	command_timeout_ms: number;
}

export type LogLevel = "debug" | "info" | "warn" | "error";

export const DEV_JWT_SECRET = defaults.jwt.secret;

/** Keys that SIGHUP applies to a running node; any other change needs a restart. */
export const RELOADABLE_KEYS = [
	"log.level",
	"log.requests",
	"rate_limit",
	"broker.request_timeout",
	"order.pay_timeout",
	"tracing.lane_sample_rate"
] as const;

const ENV_FILES: Record<EnvName, unknown> = { dev, prod, test };

/** list: comma-separated, spaces around items ignored */
type EnvType = "string" | "number" | "boolean" | "list";
/** Environment variables (SPEC "Config") and the key each one overrides. */
export const ENV_VARS: Record<string, [string, EnvType]> = {
	GOMALL_HTTP_PORT: ["http.port", "number"],
	GOMALL_HTTP_LISTEN_SOCKETS: ["http.listen_sockets", "number"],
	GOMALL_HTTP_BATCH_REPLIES: ["http.batch_replies", "boolean"],
	GOMALL_DB_HOST: ["db.host", "string"],
	GOMALL_DB_PORT: ["db.port", "number"],
	GOMALL_DB_USER: ["db.user", "string"],
	GOMALL_DB_PASSWORD: ["db.password", "string"],
	GOMALL_DB_NAME: ["db.name", "string"],
	GOMALL_REDIS_URL: ["redis.url", "string"],
	GOMALL_REDIS_CLUSTER_NODES: ["redis.cluster_nodes", "list"],
	GOMALL_REDIS_WAIT_REPLICAS: ["redis.wait_replicas", "number"],
	GOMALL_AMQP_URL: ["amqp.url", "string"],
	GOMALL_NATS_URL: ["nats.url", "string"],
	GOMALL_NAMESPACE: ["namespace", "string"],
	GOMALL_NODE_ID: ["node_id", "string"],
	GOMALL_JWT_SECRET: ["jwt.secret", "string"],
	GOMALL_JWT_EXPIRES_IN: ["jwt.expires_in", "number"],
	GOMALL_JWT_REFRESH_EXPIRES_IN: ["jwt.refresh_expires_in", "number"],
	GOMALL_ADMIN_USERNAME: ["admin.username", "string"],
	GOMALL_ADMIN_PASSWORD: ["admin.password", "string"],
	GOMALL_LOG_LEVEL: ["log.level", "string"],
	GOMALL_LOG_FORMAT: ["log.format", "string"],
	GOMALL_LOG_OUTPUT: ["log.output", "string"],
	GOMALL_LOG_FILE: ["log.file", "string"],
	GOMALL_RATE_LIMIT_ENABLED: ["rate_limit.enabled", "boolean"],
	GOMALL_ORDER_PAY_TIMEOUT: ["order.pay_timeout", "number"],
	GOMALL_PAY_PROVIDER: ["pay.provider", "string"],
	GOMALL_WECHAT_BASE_URL: ["pay.wechat.base_url", "string"],
	GOMALL_WECHAT_MCHID: ["pay.wechat.mchid", "string"],
	GOMALL_WECHAT_APPID: ["pay.wechat.appid", "string"],
	GOMALL_WECHAT_SERIAL_NO: ["pay.wechat.serial_no", "string"],
	GOMALL_WECHAT_PRIVATE_KEY_PATH: ["pay.wechat.private_key_path", "string"],
	GOMALL_WECHAT_APIV3_KEY: ["pay.wechat.apiv3_key", "string"],
	GOMALL_WECHAT_PLATFORM_PUBLIC_KEY_PATH: ["pay.wechat.platform_public_key_path", "string"],
	GOMALL_WECHAT_PLATFORM_SERIAL: ["pay.wechat.platform_serial", "string"],
	GOMALL_WECHAT_NOTIFY_URL: ["pay.wechat.notify_url", "string"],
	GOMALL_AMQP_PREFETCH: ["amqp.prefetch", "number"],
	GOMALL_OTLP_ENDPOINT: ["tracing.otlp_endpoint", "string"],
	GOMALL_TRACING_LANE_SAMPLE_RATE: ["tracing.lane_sample_rate", "number"],
	GOMALL_METRICS_PORT: ["metrics.port", "number"],
	GOMALL_UPLOAD_DIR: ["upload.dir", "string"],
	GOMALL_UPLOAD_MAX_BYTES: ["upload.max_bytes", "number"],
	GOMALL_UPLOAD_MAX_FILES: ["upload.max_files", "number"],
	GOMALL_UPLOAD_QUOTA_FILES_PER_DAY: ["upload.quota_files_per_day", "number"],
	GOMALL_UPLOAD_QUOTA_BYTES_PER_DAY: ["upload.quota_bytes_per_day", "number"],
	GOMALL_BUILD: ["build", "string"]
};

export class ConfigError extends Error {
	override name = "ConfigError";
}

const num = (min: number, max = Number.MAX_SAFE_INTEGER, integer = true) => ({ type: "number", min, max, integer });
const tier = { type: "object", strict: true, props: { rate: num(0.001, 1e7, false), burst: num(1, 1e7) } };
const str = { type: "string" };
const bool = { type: "boolean" };
const obj = (props: Record<string, unknown>) => ({ type: "object", strict: true, props });

const schema = {
	$$root: true,
	...obj({
		env: { type: "enum", values: ["dev", "prod", "test"] },
		namespace: { type: "string", pattern: /^[a-z0-9-]*$/, max: 32 },
		node_id: str,
		http: obj({
			port: num(0, 65535),
			host: { type: "string", min: 1 },
			listen_sockets: num(1, 1024),
			batch_replies: bool,
			body_limit: { type: "string", pattern: /^\d+(b|kb|mb)$/ },
			cors_origins: { type: "array", items: "string" },
			trusted_proxies: { type: "array", items: "string" }
		}),
		db: obj({
			host: { type: "string", min: 1 },
			port: num(1, 65535),
			user: str,
			password: str,
			name: { type: "string", pattern: /^[A-Za-z0-9_]+$/ },
			pool_max: num(1, 1000),
			statement_timeout_ms: num(0, 3_600_000)
		}),
		redis: obj({
			url: { type: "string", pattern: /^rediss?:\/\// },
			cluster_nodes: {
				type: "array",
				max: 100,
				items: { type: "string", pattern: /^(rediss?:\/\/)?[^\s/:]+:\d{1,5}\/?$/ }
			},
			wait_replicas: num(0, 16),
			wait_timeout_ms: num(1, 60000),
			command_timeout_ms: num(100, 600000)
		}),
		amqp: obj({
			url: { type: "string", pattern: /^amqps?:\/\// },
			prefetch: num(1, 65535),
			retry_delays_ms: { type: "array", min: 1, max: 10, items: num(10, 3_600_000) },
			confirm_timeout_ms: num(100, 600000)
		}),
		// One server or several, comma-separated (a NATS cluster: the client fails over between them).
		nats: obj({ url: { type: "string", pattern: /^(nats:\/\/[^,\s]+(,\s*nats:\/\/[^,\s]+)*)?$/ } }),
		jwt: obj({
			secret: str,
			expires_in: num(60, 365 * 86400),
			refresh_expires_in: num(60, 365 * 86400),
			verify_cache_size: num(0, 10_000_000),
			revocation_sync_interval: num(1, 86400)
		}),
		bcrypt: obj({ cost: num(4, 15) }),
		admin: obj({ username: str, password: str }),
		log: obj({
			level: { type: "enum", values: ["debug", "info", "warn", "error"] },
			format: { type: "enum", values: ["json", "pretty"] },
			output: { type: "enum", values: ["stdout", "file"] },
			file: str,
			requests: bool
		}),
		broker: obj({
			request_timeout: num(0, 600000),
			heartbeat_interval: num(1, 60),
			heartbeat_timeout: num(2, 600),
			retry: obj({ enabled: bool, retries: num(0, 10), delay: num(0, 60000), max_delay: num(0, 600000) }),
			circuit_breaker: obj({
				enabled: bool,
				threshold: num(0, 1, false),
				min_request_count: num(1),
				window_time: num(1),
				half_open_time: num(1)
			}),
			bulkhead: obj({ enabled: bool, concurrency: num(1), max_queue_size: num(0) })
		}),
		shutdown: obj({ drain_delay: num(0, 600000), timeout: num(0, 600000) }),
		cache: obj({ product_ttl: num(0, 86400) }),
		metrics: obj({ port: num(0, 65535) }),
		order: obj({ pay_timeout: num(0.1, 86400 * 7, false), sweep_interval: num(0, 86400, false) }),
		pay: obj({
			provider: { type: "enum", values: ["direct", "wechat"] },
			wechat: obj({
				base_url: { type: "string", pattern: /^(https?:\/\/.+)?$/ },
				mchid: str,
				appid: str,
				serial_no: str,
				private_key_path: str,
				apiv3_key: str,
				platform_public_key_path: str,
				platform_serial: str,
				notify_url: { type: "string", pattern: /^(https?:\/\/.+)?$/ }
			})
		}),
		seckill: obj({
			reconcile_interval: num(0, 86400, false),
			reconcile_age: num(0, 86400, false),
			max_deliveries: num(1, 100),
			batch_size: num(1, 1000),
			batch_hold_ms: num(0, 60000),
			concurrency: num(1, 100000),
			token_ttl_s: num(1, 3600, false),
			captcha_ttl_s: num(1, 3600),
			stream: obj({
				heartbeat_s: num(0.1, 3600, false),
				retry_ms: num(0, 600000),
				per_user: num(1, 1000),
				max: num(0, 10_000_000),
				resync_s: num(0, 3600, false)
			})
		}),
		rate_limit: obj({
			enabled: bool,
			local: bool,
			distributed: bool,
			redis_url: { type: "string", pattern: /^(rediss?:\/\/.*)?$/ },
			fail_open: bool,
			local_max_keys: num(1, 1e8),
			global: tier,
			api: tier,
			seckill: tier,
			seckill_token: tier,
			login: tier
		}),
		tracing: obj({
			enabled: bool,
			otlp_endpoint: str,
			service_name: { type: "string", min: 1 },
			lane_sample_rate: { type: "number", min: 0, max: 1 }
		}),
		upload: obj({
			dir: { type: "string", min: 1 },
			max_bytes: num(1, 1024 * 1024 * 1024),
			max_files: num(1, 100),
			quota_files_per_day: num(0, 1e9),
			quota_bytes_per_day: num(0),
			// Not 0: a file just uploaded is unreferenced until its product is saved.
			orphan_grace_hours: num(0.01, 24 * 3650, false),
			orphan_sweep_interval: num(0, 7 * 86400)
		}),
		build: { type: "string", max: 128 }
	})
};

const check = new Validator({ haltOnFirstError: false }).compile(schema);

function isPlainObject(v: unknown): v is Record<string, unknown> {
	return typeof v === "object" && v !== null && !Array.isArray(v);
}

function deepMerge(target: Record<string, unknown>, source: unknown): Record<string, unknown> {
	if (!isPlainObject(source)) return target;
	for (const [k, v] of Object.entries(source)) {
		target[k] =
			isPlainObject(v) && isPlainObject(target[k])
				? deepMerge({ ...(target[k] as object) } as Record<string, unknown>, v)
				: v;
	}
	return target;
}

export function getPath(obj: unknown, path: string): unknown {
	return path.split(".").reduce<unknown>((o, k) => (isPlainObject(o) ? o[k] : undefined), obj);
}

function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
	const keys = path.split(".");
	let o = obj;
	for (const k of keys.slice(0, -1)) {
		if (!isPlainObject(o[k])) o[k] = {};
		o = o[k] as Record<string, unknown>;
	}
	o[keys[keys.length - 1]] = value;
}

function parseEnvValue(name: string, key: string, raw: string, type: EnvType): unknown {
	if (type === "string") return raw;
	if (type === "list")
		return raw
			.split(",")
			.map(s => s.trim())
			.filter(Boolean);
	if (type === "number") {
		const n = Number(raw);
		if (raw.trim() === "" || !Number.isFinite(n))
			throw new ConfigError(`config: ${key} (from ${name}) must be a number, got "${raw}"`);
		return n;
	}
	if (raw === "true" || raw === "1") return true;
	if (raw === "false" || raw === "0") return false;
	throw new ConfigError(`config: ${key} (from ${name}) must be true or false, got "${raw}"`);
}

export interface LoadOptions {
	/** dev, prod or test; defaults to GOMALL_ENV, then dev. */
	env?: string;
	/** An extra JSON file merged over the environment's file. */
	file?: string;
	/** Environment variables; defaults to process.env. */
	environ?: NodeJS.ProcessEnv;
	/** Programmatic overrides (tests), merged last. */
	overrides?: unknown;
}

/**
 * Builds the configuration: defaults, then the environment's file, then `--config`, then the
 * GOMALL_* variables. Throws ConfigError naming the first bad key.
 */
export function loadConfig(opts: LoadOptions = {}): Config {
	const environ = opts.environ ?? process.env;
	const envName = opts.env ?? environ.GOMALL_ENV ?? "dev";
	if (!(envName in ENV_FILES)) throw new ConfigError(`config: env must be one of dev, prod, test; got "${envName}"`);

	let merged = deepMerge(structuredClone(defaults) as Record<string, unknown>, ENV_FILES[envName as EnvName]);
	if (opts.file) {
		let parsed: unknown;
		try {
			parsed = JSON.parse(fs.readFileSync(opts.file, "utf8"));
		} catch (err) {
			throw new ConfigError(`config: cannot read --config ${opts.file}: ${(err as Error).message}`);
		}
		merged = deepMerge(merged, parsed);
	}
	for (const [name, [key, type]] of Object.entries(ENV_VARS)) {
		const raw = environ[name];
		if (raw !== undefined) setPath(merged, key, parseEnvValue(name, key, raw, type));
	}
	merged = deepMerge(merged, opts.overrides);
	merged.env = envName;

	const result = check(merged);
	if (result !== true) {
		const first = (result as { field: string; message: string; actual?: unknown }[])[0];
		const key = first.field.replace(/^\$\$root\.?/, "");
		throw new ConfigError(`config: invalid value for ${key || "root"}: ${first.message}`);
	}
	const cfg = merged as unknown as Config;

	// The development secret is public (it is in this repository): any token signed with it is forgeable.
	if (cfg.env !== "dev" && cfg.jwt.secret === DEV_JWT_SECRET) {
		throw new ConfigError(
			`config: jwt.secret (GOMALL_JWT_SECRET) must not be the development secret outside dev (env ${cfg.env})`
		);
	}
	if (cfg.env === "prod" && cfg.jwt.secret.length < 32) {
		throw new ConfigError(
			"config: jwt.secret (GOMALL_JWT_SECRET) must be set to a secret of at least 32 characters in prod, not the development secret"
		);
	}
	// A peer that misses one beat (GC pause, busy event loop) must not be dropped at once.
	if (cfg.broker.heartbeat_timeout < 2 * cfg.broker.heartbeat_interval)
		throw new ConfigError("config: broker.heartbeat_timeout must be at least twice broker.heartbeat_interval");
	if (cfg.pay.provider === "wechat") {
		const w = cfg.pay.wechat;
		const missing = (
			["base_url", "mchid", "appid", "serial_no", "private_key_path", "platform_public_key_path", "notify_url"] as const
		).filter(k => !w[k]);
		if (missing.length) throw new ConfigError(`config: pay.provider wechat needs pay.wechat.${missing.join(", ")}`);
		if (Buffer.byteLength(w.apiv3_key, "utf8") !== 32)
			throw new ConfigError("config: pay.wechat.apiv3_key (GOMALL_WECHAT_APIV3_KEY) must be 32 bytes");
	}
	if (cfg.log.output === "file" && !cfg.log.file)
		throw new ConfigError("config: log.file must be set when log.output is file");
	return deepFreeze(cfg);
}

function deepFreeze<T>(o: T): T {
	if (isPlainObject(o) || Array.isArray(o)) {
		Object.values(o as object).forEach(deepFreeze);
		Object.freeze(o);
	}
	return o;
}

/** The reloadable keys whose values differ between two configurations. */
export function reloadableChanges(before: Config, after: Config): string[] {
	return RELOADABLE_KEYS.filter(k => JSON.stringify(getPath(before, k)) !== JSON.stringify(getPath(after, k)));
}

/**
 * What SIGHUP installs: the running configuration with only the reloadable keys taken from the
 * file just read. A restart-only key (namespace, ports, URLs, the JWT secret...) keeps its
 * running value, since code that read it at start-up (exchange names, open connections) would
 * disagree with code that reads it per call.
 */
export function withReloadedKeys(running: Config, reloaded: Config): Config {
	const next = structuredClone(running) as unknown as Record<string, unknown>;
	for (const key of RELOADABLE_KEYS) setPath(next, key, structuredClone(getPath(reloaded, key)));
	return deepFreeze(next as unknown as Config);
}

/** Non-reloadable top-level sections that differ (they need a restart). */
export function restartOnlyChanges(before: Config, after: Config): string[] {
	const flat = (c: Config) => {
		const out: Record<string, string> = {};
		const walk = (o: unknown, prefix: string) => {
			if (isPlainObject(o)) for (const [k, v] of Object.entries(o)) walk(v, prefix ? `${prefix}.${k}` : k);
			else out[prefix] = JSON.stringify(o);
		};
		walk(c, "");
		return out;
	};
	const a = flat(before);
	const b = flat(after);
	return Object.keys({ ...a, ...b }).filter(
		k => a[k] !== b[k] && !RELOADABLE_KEYS.some(r => k === r || k.startsWith(r + "."))
	);
}

/**
 * The node's live configuration. Services read it through getConfig(); SIGHUP replaces it
 * with a fresh frozen object and emits `$config.changed` locally, so no one mutates it.
 */
let current: Config | undefined;

export function setConfig(cfg: Config): void {
	current = cfg;
}

export function getConfig(): Config {
	if (!current) current = loadConfig();
	return current;
}
