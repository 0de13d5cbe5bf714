import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ConfigError, loadConfig, reloadableChanges, restartOnlyChanges, withReloadedKeys } from "../../config";

describe("loadConfig", () => {
	it("layers defaults, the environment's file and GOMALL_* variables", () => {
		const cfg = loadConfig({
			env: "dev",
			environ: {
				GOMALL_HTTP_PORT: "9090",
				GOMALL_DB_NAME: "shop",
				GOMALL_RATE_LIMIT_ENABLED: "false",
				GOMALL_NATS_URL: ""
			}
		});
		expect(cfg.http.port).toBe(9090);
		expect(cfg.db.name).toBe("shop");
		expect(cfg.rate_limit.enabled).toBe(false);
		expect(cfg.nats.url).toBe("");
		expect(cfg.log.format).toBe("pretty"); // from dev.json
		expect(cfg.db.host).toBe("127.0.0.1"); // from default.json
	});

	it("picks the environment from GOMALL_ENV and merges --config over it", () => {
		const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "gomall-")), "extra.json");
		fs.writeFileSync(file, JSON.stringify({ order: { pay_timeout: 5 }, log: { level: "debug" } }));
		const cfg = loadConfig({ file, environ: { GOMALL_ENV: "test", GOMALL_LOG_LEVEL: "error" } });
		expect(cfg.env).toBe("test");
		expect(cfg.bcrypt.cost).toBe(4); // test.json
		expect(cfg.order.pay_timeout).toBe(5); // --config
		expect(cfg.log.level).toBe("error"); // variables beat files
	});

	it.each([
		[{ GOMALL_HTTP_PORT: "eighty" }, "http.port"],
		[{ GOMALL_HTTP_PORT: "70000" }, "http.port"],
		[{ GOMALL_HTTP_LISTEN_SOCKETS: "0" }, "http.listen_sockets"],
		[{ GOMALL_HTTP_BATCH_REPLIES: "sometimes" }, "http.batch_replies"],
		[{ GOMALL_LOG_LEVEL: "loud" }, "log.level"],
		[{ GOMALL_REDIS_URL: "localhost:6379" }, "redis.url"],
		[{ GOMALL_RATE_LIMIT_ENABLED: "maybe" }, "rate_limit.enabled"],
		[{ GOMALL_NAMESPACE: "Bad Space" }, "namespace"]
	])("refuses %p naming the key", (environ, key) => {
		expect(() => loadConfig({ env: "dev", environ })).toThrow(ConfigError);
		expect(() => loadConfig({ env: "dev", environ })).toThrow(new RegExp(key.replace(".", "\\.")));
	});

	it("refuses unknown keys in a config file (a typo is not silently ignored)", () => {
		const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "gomall-")), "typo.json");
		fs.writeFileSync(file, JSON.stringify({ http: { prot: 1 } }));
		expect(() => loadConfig({ env: "dev", file, environ: {} })).toThrow(/http/);
	});

	it("refuses to run prod with the development JWT secret or none", () => {
		expect(() => loadConfig({ env: "prod", environ: {} })).toThrow(/jwt\.secret/);
		expect(() =>
			loadConfig({ env: "prod", environ: { GOMALL_JWT_SECRET: loadConfig({ env: "dev", environ: {} }).jwt.secret } })
		).toThrow(/jwt\.secret/);
		expect(
			loadConfig({ env: "prod", environ: { GOMALL_JWT_SECRET: "x".repeat(40), GOMALL_PAY_PROVIDER: "direct" } }).env
		).toBe("prod");
	});

	it("pays through the provider in prod unless told otherwise: direct (paying costs nothing) only when chosen", () => {
		const secret = { GOMALL_JWT_SECRET: "x".repeat(40) };
		expect(() => loadConfig({ env: "prod", environ: secret })).toThrow(/pay\.provider wechat needs/);
		expect(loadConfig({ env: "prod", environ: { ...secret, GOMALL_PAY_PROVIDER: "direct" } }).pay.provider).toBe(
			"direct"
		);
		expect(loadConfig({ env: "dev", environ: {} }).pay.provider).toBe("direct");
		expect(loadConfig({ env: "test", environ: {} }).pay.provider).toBe("direct");
	});

	it("refuses the development JWT secret in every environment but dev", () => {
		const devSecret = loadConfig({ env: "dev", environ: {} }).jwt.secret;
		expect(() => loadConfig({ env: "test", environ: { GOMALL_JWT_SECRET: devSecret } })).toThrow(/jwt\.secret/);
		expect(loadConfig({ env: "test", environ: {} }).jwt.secret).not.toBe(devSecret);
		expect(loadConfig({ env: "dev", environ: {} }).jwt.secret).toBe(devSecret);
	});

	it("takes only the reloadable keys from a reloaded file (SIGHUP); restart-only keys keep their running value", () => {
		const running = loadConfig({ env: "dev", environ: { GOMALL_NAMESPACE: "a" } });
		const reloaded = loadConfig({
			env: "dev",
			environ: { GOMALL_NAMESPACE: "b", GOMALL_LOG_LEVEL: "debug", GOMALL_HTTP_PORT: "9999" },
			overrides: { rate_limit: { login: { rate: 3, burst: 4 } }, jwt: { expires_in: 60 } }
		});
		const applied = withReloadedKeys(running, reloaded);
		expect(applied).toMatchObject({ namespace: "a", http: { port: running.http.port }, log: { level: "debug" } });
		expect(applied.jwt.expires_in).toBe(running.jwt.expires_in);
		expect(applied.rate_limit.login).toEqual({ ...running.rate_limit.login, rate: 3, burst: 4 });
		expect(restartOnlyChanges(running, reloaded)).toEqual(
			expect.arrayContaining(["namespace", "http.port", "jwt.expires_in"])
		);
		expect(Object.isFrozen(applied.rate_limit)).toBe(true);
	});

	it("refuses a heartbeat timeout shorter than two heartbeats", () => {
		expect(() =>
			loadConfig({ env: "test", overrides: { broker: { heartbeat_interval: 5, heartbeat_timeout: 6 } } })
		).toThrow(/heartbeat_timeout/);
	});

	it("refuses an unknown environment", () => {
		expect(() => loadConfig({ env: "staging", environ: {} })).toThrow(/env/);
	});

	it("bounds uploads per user and day and sweeps orphans, with defaults and named bad values", () => {
		const cfg = loadConfig({ env: "dev", environ: {} });
		expect(cfg.upload).toMatchObject({
			quota_files_per_day: 100,
			quota_bytes_per_day: 100 * 1024 * 1024,
			orphan_grace_hours: 24,
			orphan_sweep_interval: 3600
		});
		const set = loadConfig({
			env: "dev",
			environ: { GOMALL_UPLOAD_QUOTA_FILES_PER_DAY: "5", GOMALL_UPLOAD_QUOTA_BYTES_PER_DAY: "0" }
		});
		expect([set.upload.quota_files_per_day, set.upload.quota_bytes_per_day]).toEqual([5, 0]);
		for (const [upload, key] of [
			[{ quota_files_per_day: -1 }, "upload.quota_files_per_day"],
			[{ quota_bytes_per_day: 1.5 }, "upload.quota_bytes_per_day"],
			[{ orphan_grace_hours: 0 }, "upload.orphan_grace_hours"],
			[{ orphan_sweep_interval: -5 }, "upload.orphan_sweep_interval"]
		] as const)
			expect(() => loadConfig({ env: "dev", environ: {}, overrides: { upload } })).toThrow(
				new RegExp(key.replace(/\./g, "\\."))
			);
	});

	it("returns a frozen object", () => {
		const cfg = loadConfig({ env: "dev", environ: {} });
		expect(Object.isFrozen(cfg.http)).toBe(true);
	});
});

describe("reload diff", () => {
	it("separates reloadable keys from those that need a restart", () => {
		const a = loadConfig({ env: "dev", environ: {} });
		const b = loadConfig({ env: "dev", environ: { GOMALL_LOG_LEVEL: "debug", GOMALL_HTTP_PORT: "9999" } });
		expect(reloadableChanges(a, b)).toEqual(["log.level"]);
		expect(restartOnlyChanges(a, b)).toEqual(["http.port"]);
	});
});
