import type { Sequelize, Transaction } from "sequelize";

const RETRYABLE = new Set([1213 /* ER_LOCK_DEADLOCK */, 1205 /* ER_LOCK_WAIT_TIMEOUT */]);

function errno(err: unknown): number | undefined {
	const e = err as { parent?: { errno?: number }; original?: { errno?: number }; errno?: number };
	return e?.parent?.errno ?? e?.original?.errno ?? e?.errno;
}

/**
 * A managed transaction that is run again when InnoDB picks it as a deadlock victim (the
 * whole transaction was rolled back, so running it again is safe). Business errors thrown
 * inside roll back and pass through unchanged.
 */
export async function inTransaction<T>(db: Sequelize, fn: (t: Transaction) => Promise<T>, attempts = 4): Promise<T> {
	for (let i = 1; ; i++) {
		try {
			return await db.transaction(fn);
		} catch (err) {
			const code = errno(err);
			if (i >= attempts || code === undefined || !RETRYABLE.has(code)) throw err;
			await new Promise(r => setTimeout(r, 5 * i + Math.random() * 10));
		}
	}
}
