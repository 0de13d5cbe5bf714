import crypto from "node:crypto";
import { QueryTypes, Sequelize, Transaction, UniqueConstraintError } from "sequelize";
import { bizError } from "../contract/errors";
import { inTransaction } from "./tx";

/** How long a key's first answer is kept and replayed (SPEC "Repeated requests": 24 h). */
export const IDEMPOTENCY_TTL_S = 24 * 3600;

/** 1 to 128 printable ASCII characters (space to tilde). */
const KEY_PATTERN = /^[\x20-\x7e]{1,128}$/;

/**
 * The Idempotency-Key a request carried (the gateway copies the header into the context's
 * meta): undefined when it carried none; anything else than 1 to 128 printable ASCII characters,
 * an empty value included, is a 400 that names the header.
 */
export function parseIdempotencyKey(raw: unknown): string | undefined {
	if (raw === undefined || raw === null) return undefined;
	if (typeof raw === "string" && KEY_PATTERN.test(raw)) return raw;
	throw bizError(
		"BAD_REQUEST",
		[{ field: "Idempotency-Key", message: "must be 1 to 128 printable ASCII characters" }],
		"invalid Idempotency-Key header"
	);
}

function canonical(value: unknown): unknown {
	if (Array.isArray(value)) return value.map(canonical);
	if (value && typeof value === "object" && !(value instanceof Date)) {
		const o = value as Record<string, unknown>;
		return Object.fromEntries(
			Object.keys(o)
				.sort()
				.map(k => [k, canonical(o[k])])
		);
	}
	return value;
}

/**
 * SHA-256 of an operation and its parameters in canonical form (keys sorted), so the same
 * request sent again (fields in another order, a number as a string) hashes the same. The
 * operation is the action's name, which stands for the method and path (one route per action);
 * the parameters are those the action validated, i.e. what it acts on.
 */
export function requestHash(operation: string, params: unknown): Buffer {
	return crypto
		.createHash("sha256")
		.update(JSON.stringify([operation, canonical(params ?? {})]))
		.digest();
}

export interface IdempotentRequest {
	userId: number;
	key: string;
	hash: Buffer;
}

/** The key already has an answer, committed by another request (claim's INSERT hit the primary key). */
class KeyTaken extends Error {}

/** What `once` ended with: this call's own result, or the first answer replayed. */
export type Once<T> = { replayed: false; result: T } | { replayed: true; answer: unknown };

/**
 * The idempotency_keys table: per user and key, the request's hash and its first answer.
 *
 * Only successful answers are stored. Every failure of the operations that use it (a business
 * refusal or an error) rolls their whole transaction back, so it changed nothing, and it is worth
 * retrying: the stock may be back, the cart filled. A retry with the same key after a refusal
 * therefore runs again, and the first success is what the key answers from then on (Stripe
 * stores errors too, but not those that changed nothing and are worth retrying, which here are
 * all of them). A key is scoped to its user: two users' equal keys never meet.
 */
export class IdempotencyKeys {
	/** `pool`: the Sequelize instance, asked for at each use (an actor's pool exists only once it has started). */
	constructor(
		private readonly pool: () => Sequelize,
		private readonly ttlS = IDEMPOTENCY_TTL_S
	) {}

	private get db(): Sequelize {
		return this.pool();
	}

	/**
	 * Runs `work` at most once for the request's key, in one transaction with the key's row:
	 * the row is inserted first (a concurrent request with the same key waits on its primary
	 * key until this transaction ends), the answer written last, so the answer and the effect
	 * commit together or not at all. When the key already holds an answer, `work` does not run:
	 * the stored answer is returned if the request is the same, and a different request with
	 * that key is refused (422). An expired answer is ignored (and deleted).
	 */
	async once<T>(
		req: IdempotentRequest,
		work: (t: Transaction) => Promise<T>,
		answerOf: (result: T) => unknown
	): Promise<Once<T>> {
		for (let attempt = 0; attempt < 5; attempt++) {
			try {
				const result = await inTransaction(this.db, async transaction => {
					await this.claim(req, transaction);
					const done = await work(transaction);
					await this.db.query("UPDATE idempotency_keys SET response = ? WHERE user_id = ? AND idem_key = ?", {
						replacements: [JSON.stringify(answerOf(done)), req.userId, req.key],
						transaction
					});
					return done;
				});
				return { replayed: false, result };
			} catch (err) {
				if (!(err instanceof KeyTaken)) throw err;
			}
			const stored = await this.stored(req);
			if (!stored) continue; // expired, or purged in between: claim it again
			if (!stored.hash.equals(req.hash)) throw bizError("IDEMPOTENCY_KEY_REUSED");
			return { replayed: true, answer: stored.answer };
		}
		throw bizError("UNAVAILABLE");
	}

	/** The first statement of the transaction: the key's row, without an answer yet (never committed so). */
	private async claim(req: IdempotentRequest, transaction: Transaction): Promise<void> {
		try {
			await this.db.query(
				`INSERT INTO idempotency_keys (user_id, idem_key, request_hash, response, expires_at)
				 VALUES (?, ?, ?, '', NOW(3) + INTERVAL ? SECOND)`,
				{ replacements: [req.userId, req.key, req.hash, this.ttlS], transaction }
			);
		} catch (err) {
			if (err instanceof UniqueConstraintError) throw new KeyTaken();
			throw err;
		}
	}

	/** The committed answer to the key; null when there is none (an expired one is deleted here). */
	private async stored(req: IdempotentRequest): Promise<{ hash: Buffer; answer: unknown } | null> {
		const [row] = (await this.db.query(
			"SELECT request_hash, response, expires_at <= NOW(3) AS expired FROM idempotency_keys WHERE user_id = ? AND idem_key = ?",
			{ replacements: [req.userId, req.key], type: QueryTypes.SELECT }
		)) as { request_hash: Buffer; response: string; expired: number }[];
		if (!row) return null;
		if (Number(row.expired)) {
			await this.db.query("DELETE FROM idempotency_keys WHERE user_id = ? AND idem_key = ? AND expires_at <= NOW(3)", {
				replacements: [req.userId, req.key]
			});
			return null;
		}
		return { hash: Buffer.from(row.request_hash), answer: JSON.parse(row.response) };
	}

	/** Deletes up to `limit` expired keys; returns how many. */
	async purgeExpired(limit = 1000): Promise<number> {
		return (await this.db.query("DELETE FROM idempotency_keys WHERE expires_at <= NOW(3) LIMIT ?", {
			replacements: [limit],
			type: QueryTypes.BULKDELETE
		})) as unknown as number;
	}
}
