import type { Context } from "moleculer";
import { getConfig } from "../../config";
import { bizError } from "../../lib/contract/errors";
import { AuthUser, ROLE_ADMIN } from "../../lib/auth/jwt";
import type { RevokedSession } from "../../lib/auth/sessions";
import type { ApiThis, AuthLevel, Req, Res } from "./types";

/** Thrown for every token of an ended session: made once, so a refusal costs no stack trace. */
const SESSION_ENDED = bizError("TOKEN_INVALID", undefined, "session ended, log in again");
/** Thrown for a good token while this gateway cannot tell whether its session has ended. */
const NOT_READY = bizError(
	"UNAVAILABLE",
	undefined,
	"this gateway is starting (the ended sessions are not loaded yet), please retry"
);

export const authMethods = {
	/** Reads the Bearer token. A route whose action declares `auth` refuses a missing or bad one. */
	authenticate(this: ApiThis, _ctx: Context, _route: unknown, req: Req, res: Res): AuthUser | null {
		return this.verifyBearer(req.headers.authorization, req.$action?.auth, res);
	},

	/**
	 * The caller of a route that needs `need`, or null (anonymous) on a route that needs none.
	 * Until this gateway has loaded the ended sessions once (syncRevocations) it cannot tell a
	 * live session's token from an ended one's, so a route that needs a user answers 503 with
	 * Retry-After (on `res`) rather than guess; a missing or bad token is still a 401.
	 */
	verifyBearer(this: ApiThis, header: string | undefined, need: AuthLevel, res?: Res): AuthUser | null {
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
		if (!this.revocationsLoaded) {
			if (!need) return null;
			res?.setHeader("Retry-After", "1");
			throw NOT_READY;
		}
		// Also on the verify cache's hits: a session can end while its token is remembered. Every
		// token verify accepts names its session (one without is TOKEN_INVALID above).
		if (this.revoked.has(verdict.sid)) {
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
		const rl = getConfig().rate_limit;
		if (rl.enabled && rl.distributed) await this.limitDistributed(ctx.meta.user, req.$action?.name, req, res);
	},

	/**
	 * Loads the sessions ended recently from the user actor: at start, and then every
	 * jwt.revocation_sync_interval, which repairs a broadcast missed while this node was cut
	 * off. True when the list was loaded. Until the first load the node is not ready (/ready
	 * 503) and refuses authenticated requests (verifyBearer).
	 */
	async syncRevocations(this: ApiThis): Promise<boolean> {
		// Not known yet: no call (Moleculer would log each one that finds no service).
		if (!this.broker.registry.getServiceList({ onlyAvailable: true }).some(s => s.name === "user")) return false;
		try {
			this.revoked.add(
				await this.broker.call<RevokedSession[], { since?: number }>(
					"user.revokedSessions",
					// The first load takes them all; a resync, what ended since the newest it holds.
					this.revoked.newestRevoked ? { since: this.revoked.newestRevoked } : {},
					{ retries: 0, timeout: 5000 }
				)
			);
			if (!this.revocationsLoaded) {
				this.logger.info(`revoked sessions loaded (${this.revoked.size} within their tokens' lifetime)`);
				this.revocationsLoaded = true;
				// Ready once the broker has started too (the $broker.started event, api.service.ts).
				this.ready = this.brokerStarted;
			}
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
			if (this.revocationTimer)
				this.scheduleRevocationSync(ok ? getConfig().jwt.revocation_sync_interval * 1000 : 1000);
		}, delayMs);
		this.revocationTimer.unref();
	}
} satisfies Partial<ApiThis>;
