/**
 * The user actor in process (a ServiceBroker without a transporter, the actor's schema, its real
 * table in a database of the test's own): the list of ended sessions that gateways load at start
 * and at every resync.
 */
import { ServiceBroker, ServiceSchema } from "moleculer";
import { QueryTypes, Sequelize } from "sequelize";
import { setConfig } from "../../config";
import { newSessionId, RevokedSession, RevokedSessions } from "../../lib/auth/sessions";
import { migrate } from "../../lib/storage/migrate";
import { dropDatabase, testConfig } from "../helpers/node";

const cfg = testConfig({ admin: { username: "", password: "" }, db: { statement_timeout_ms: 30000 } });
const broker = new ServiceBroker({ logger: false, validator: true, nodeID: cfg.node_id });
let db: Sequelize;

beforeAll(async () => {
	setConfig(cfg);
	await migrate(cfg.db);
	// eslint-disable-next-line @typescript-eslint/no-require-imports
	broker.createService(require("../../services/user.service").default as ServiceSchema);
	await broker.start();
	db = (broker.getLocalService("user") as unknown as { adapter: { db: Sequelize } }).adapter.db;
}, 30000);

afterAll(async () => {
	await broker.stop();
	await dropDatabase(cfg);
});

/** A session of user 1 ended `agoS` seconds ago (the database's clock). */
async function endedAgo(agoS: number): Promise<string> {
	const sid = newSessionId();
	await db.query(
		"INSERT INTO user_sessions (id, user_id, revoked_at, revoke_reason) VALUES (?, 1, NOW(3) - INTERVAL ? SECOND, 'logout')",
		{ replacements: [sid, agoS], type: QueryTypes.INSERT }
	);
	return sid;
}

const revoked = (params: { since?: number }) =>
	broker.call<RevokedSession[], typeof params>("user.revokedSessions", params);

describe("user.revokedSessions", () => {
	it("answers every session ended within the tokens' lifetime at a gateway's start, and at a resync only those ended since about the newest it holds", async () => {
		const old = await endedAgo(600);
		const recent = await endedAgo(5);
		const expired = await endedAgo(cfg.jwt.expires_in + 60);

		const all = await revoked({});
		expect(all.map(s => s.sid).sort()).toEqual([old, recent].sort());
		// What a gateway holds after loading them: the newest ended about 5 s ago.
		const held = new RevokedSessions();
		held.add(all);
		const now = Number(
			((await db.query("SELECT UNIX_TIMESTAMP(NOW())", { type: QueryTypes.SELECT })) as any[])[0][
				"UNIX_TIMESTAMP(NOW())"
			]
		);
		expect(Math.abs(held.newestRevoked - (now - 5))).toBeLessThanOrEqual(1);

		// A session ended later; the resync reads it and what ended within the margin before the
		// newest held (the recent one), never the 10-minute-old one again.
		const later = await endedAgo(0);
		const resync = await revoked({ since: held.newestRevoked });
		expect(resync.map(s => s.sid).sort()).toEqual([recent, later].sort());
		expect(resync.every(s => s.until > now && s.revoked !== undefined)).toBe(true);
		expect(all.concat(resync).some(s => s.sid === expired)).toBe(false);
	});

	it("reaches back at least twice db.statement_timeout_ms before `since`: a revocation that committed late is not missed", async () => {
		// Ended 50 s before the newest held: inside the margin (60 s, and 2 x 30 s here).
		const late = await endedAgo(55);
		const newest = await endedAgo(5);
		const held = new RevokedSessions();
		held.add((await revoked({})).filter(s => s.sid === newest));
		const resync = await revoked({ since: held.newestRevoked });
		expect(resync.map(s => s.sid)).toEqual(expect.arrayContaining([late, newest]));
	});

	it("refuses a `since` that is not a Unix time in seconds", async () => {
		await expect(revoked({ since: -1 })).rejects.toMatchObject({ name: "ValidationError" });
		await expect(revoked({ since: 1.5 })).rejects.toMatchObject({ name: "ValidationError" });
	});
});
