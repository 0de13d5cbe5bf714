import { getConfig } from "../../config";
import { bizError } from "../../lib/contract/errors";
import type { AuthUser } from "../../lib/auth/jwt";
import { checkDistributed, clientIp, DistributedCheck, Verdict } from "../../lib/http/ratelimit";
import type { ApiThis, Req, Res } from "./types";

/** Thrown for every refused request: made once, so a refusal costs no stack trace. */
const RATE_LIMITED = bizError("TOO_MANY_REQUESTS");

export const limitMethods = {
	/** This node's per-IP token bucket: the cheap layer, before any token is verified. */
	limitLocal(this: ApiThis, req: Req, res: Res): void {
		const rl = getConfig().rate_limit;
		req.$clientIp = clientIp(req.socket.remoteAddress, req.headers["x-forwarded-for"], this.trusted);
		if (!rl.enabled || !rl.local) return;
		const verdict = this.buckets.take(req.$clientIp, rl.api);
		if (!verdict.allowed) this.refuse(res, verdict, "local", "api");
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
		const rl = getConfig().rate_limit;
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
	}
} satisfies Partial<ApiThis>;
