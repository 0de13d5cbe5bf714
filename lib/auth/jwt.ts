import crypto from "node:crypto";
import jwt from "jsonwebtoken";
import { LRUCache } from "lru-cache";
import type { CodeKey } from "../contract/codes";

export interface AuthUser {
	id: number;
	role: number;
	/**
	 * The session that issued the token (lib/sessions): ending the session ends the token. Every
	 * token carries one; a token without it could never be revoked, so it is refused.
	 */
	sid: string;
}

const SID = /^[0-9a-f]{32}$/;

export const ROLE_USER = 1;
export const ROLE_ADMIN = 2;

/**
 * HS256 tokens over a pre-built KeyObject: jsonwebtoken turns a string secret into a key on
 * every call, which is several times slower on the gateway's hot path.
 *
 * Verified tokens are remembered (verifyCacheSize entries, least recently used out first),
 * keyed by the whole token, signature included, so only the exact string that passed the
 * signature check matches; its expiry is checked again on every use. A flash-sale buyer sends
 * the same token many times a second, and the HMAC and the parsing were a seventh of the
 * gateway's work (see README, Benchmark). 0 turns the cache off.
 */
export class TokenService {
	private readonly key: crypto.KeyObject;
	private readonly verified: LRUCache<string, { user: AuthUser; exp: number }> | null;

	constructor(
		secret: string,
		private readonly expiresInSeconds: number,
		verifyCacheSize = 0
	) {
		this.key = crypto.createSecretKey(Buffer.from(secret, "utf8"));
		this.verified = verifyCacheSize > 0 ? new LRUCache({ max: verifyCacheSize }) : null;
	}

	/** An access token of session `sid` (a 32-hex session id, lib/sessions newSessionId). */
	sign(user: Pick<AuthUser, "id" | "role">, sid: string): string {
		if (!SID.test(sid)) throw new Error("an access token needs a session id (32 lowercase hex digits)");
		return jwt.sign({ role: user.role, sid }, this.key, {
			algorithm: "HS256",
			subject: String(user.id),
			expiresIn: this.expiresInSeconds
		});
	}

	/**
	 * The user, or the code key saying why the token is refused. A token without a session id is
	 * invalid (it could outlive any logout); it is refused before the cache, which so only ever
	 * holds tokens that name their session.
	 */
	verify(token: string): AuthUser | CodeKey {
		const known = this.verified?.get(token);
		if (known) {
			// The same rule as jsonwebtoken's: expired from the second `exp` names.
			if (Math.floor(Date.now() / 1000) < known.exp) return known.user;
			this.verified!.delete(token);
			return "TOKEN_EXPIRED";
		}
		try {
			const claims = jwt.verify(token, this.key, { algorithms: ["HS256"] }) as jwt.JwtPayload;
			const id = Number(claims.sub);
			const role = Number(claims.role);
			if (!Number.isSafeInteger(id) || id <= 0 || (role !== ROLE_USER && role !== ROLE_ADMIN)) return "TOKEN_INVALID";
			if (typeof claims.sid !== "string" || !SID.test(claims.sid)) return "TOKEN_INVALID";
			const user: AuthUser = { id, role, sid: claims.sid };
			// Only tokens that expire are remembered: the cache must never outlive a token.
			if (this.verified && typeof claims.exp === "number") this.verified.set(token, { user, exp: claims.exp });
			return user;
		} catch (err) {
			return (err as Error).name === "TokenExpiredError" ? "TOKEN_EXPIRED" : "TOKEN_INVALID";
		}
	}
}
