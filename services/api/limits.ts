import { getConfig } from "../../config";
import { bizError } from "../../lib/contract/errors";
import type { AuthUser } from "../../lib/auth/jwt";
import { clientIp, DistributedCheck, rateKey, Verdict } from "../../lib/http/ratelimit";
import type { ApiThis, Req, Res } from "./types";

/** Thrown for every refused request: made once, so a refusal costs no stack trace. */
const RATE_LIMITED = bizError("TOO_MANY_REQUESTS");

/** Everything that checks a password or a refresh token is guessing's target: the login tier, per IP. */
const LOGIN_TIER = new Set(["user.login", "user.refresh", "user.changePassword"]);
/**
 * Sale tokens and captchas, per user (README "Sale tokens"): a tier of its own, so a buyer's
 * tries at the sale and its captcha answers are counted apart, and each bounds a script's pace.
 */
const SALE_TOKEN_TIER = new Set(["stock.saleToken", "stock.captcha"]);

export const limitMethods = {
	/**
	 * This node's per-IP token buckets: the cheap layer, before any token is verified. The api
	 * tier for every route (when rate_limit.local is on), and the login tier for the routes
	 * guessing aims at, whatever rate_limit.local and rate_limit.distributed say: it is what
	 * still limits login when the shared layer's Redis cannot answer, so it is always kept
	 * (warm, with no fresh burst at the moment Redis goes away). Per IP means per IPv4 address,
	 * or per IPv6 /64 (rateKey).
	 */
	limitLocal(this: ApiThis, req: Req, res: Res): void {
		const rl = getConfig().rate_limit;
		req.$clientIp = clientIp(req.socket.remoteAddress, req.headers["x-forwarded-for"], this.trusted);
		if (!rl.enabled) return;
		const key = rateKey(req.$clientIp);
		if (rl.local) {
			const verdict = this.buckets.take(key, rl.api);
			if (!verdict.allowed) this.refuse(res, verdict, "local", "api");
		}
		const action = req.$action?.name;
		if (action && LOGIN_TIER.has(action)) {
			const verdict = this.loginBuckets.take(key, rl.login);
			if (!verdict.allowed) this.refuse(res, verdict, "local", "login");
		}
	},

	/**
	 * The shared layer, after authentication so the flash sale can be limited per user:
	 * global, per IP, and per route (login per IP, seckill per user), one Redis round trip.
	 * If Redis cannot answer, the request goes through (or gets 503 with fail_open off),
	 * with a warning at most every 10 s and a metric; never a 500. fail_open never opens the
	 * login tier: its requests went through this node's login bucket already (limitLocal),
	 * which goes on limiting them per IP.
	 */
	async limitDistributed(
		this: ApiThis,
		user: AuthUser | null | undefined,
		action: string | undefined,
		req: Req,
		res: Res
	): Promise<void> {
		const rl = getConfig().rate_limit;
		const ip = rateKey(req.$clientIp ?? "");
		const checks: DistributedCheck[] = [
			{ key: "rl:global", tier: rl.global },
			{ key: `rl:api:${ip}`, tier: rl.api }
		];
		if (action && LOGIN_TIER.has(action)) checks.push({ key: `rl:login:${ip}`, tier: rl.login });
		else if (action === "stock.seckill" && user) checks.push({ key: `rl:seckill:${user.id}`, tier: rl.seckill });
		else if (action && SALE_TOKEN_TIER.has(action) && user)
			checks.push({ key: `rl:seckill_token:${user.id}`, tier: rl.seckill_token });
		let verdict: Verdict;
		try {
			verdict = await this.sharedLimiter.check(checks);
		} catch (err) {
			this.broker.metrics.increment("gomall_rate_limit_errors_total");
			const now = Date.now();
			if (now - this.limiterWarnedAt > 10000) {
				this.limiterWarnedAt = now;
				this.logger.warn(
					`rate limiter: Redis unavailable (${(err as Error).message}); ${rl.fail_open ? "letting requests through (login limited by each node's bucket)" : "refusing requests"}`
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
	}
} satisfies Partial<ApiThis>;
