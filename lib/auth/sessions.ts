import crypto from "node:crypto";

/**
 * Sessions (migrations/005_sessions.sql): a login opens one; its access tokens carry its id as
 * the `sid` claim and its refresh tokens rotate on use.
 */

/** A new session id: the `sid` claim. */
export function newSessionId(): string {
	return crypto.randomBytes(16).toString("hex");
}

/** A refresh token: 256 random bits, so a plain SHA-256 of it is all the server keeps. */
export function newRefreshToken(): { token: string; hash: Buffer } {
	const token = crypto.randomBytes(32).toString("base64url");
	return { token, hash: hashRefreshToken(token) };
}

export function hashRefreshToken(token: string): Buffer {
	return crypto.createHash("sha256").update(token, "utf8").digest();
}

export interface RevokedSession {
	sid: string;
	/** Unix seconds after which no access token of the session can be valid anyway. */
	until: number;
	/** Unix seconds (the database's clock) when it ended: in the user actor's list, not in its announcements. */
	revoked?: number;
}

/**
 * How long gateways refuse a session ended at `endedAt` (Unix seconds): a token issued at that
 * moment lives `accessTtl` more seconds; one more for the clock's rounding.
 */
export function refusedUntil(endedAt: number, accessTtl: number): number {
	return Math.ceil(endedAt) + accessTtl + 1;
}

/**
 * The revoked sessions a gateway refuses, in memory, so that checking one costs a map lookup and
 * no Redis round trip on every request. An entry is kept only until the session's last access
 * token would have expired by itself.
 */
export class RevokedSessions {
	private readonly until = new Map<string, number>();
	private nextPrune = 0;
	private newest = 0;

	add(sessions: readonly RevokedSession[]): void {
		for (const s of sessions) {
			if (s.until > (this.until.get(s.sid) ?? 0)) this.until.set(s.sid, s.until);
			if (s.revoked !== undefined && s.revoked > this.newest) this.newest = s.revoked;
		}
	}

	/**
	 * When the newest session of the user actor's lists ended (Unix seconds, the database's clock;
	 * 0 before any): a resync asks only for sessions ended since about then.
	 */
	get newestRevoked(): number {
		return this.newest;
	}

	has(sid: string): boolean {
		if (this.until.size === 0) return false;
		const now = Date.now() / 1000;
		if (now >= this.nextPrune) this.prune(now);
		const until = this.until.get(sid);
		return until !== undefined && now < until;
	}

	get size(): number {
		return this.until.size;
	}

	private prune(now: number): void {
		this.nextPrune = now + 60;
		for (const [sid, until] of this.until) if (until <= now) this.until.delete(sid);
	}
}
