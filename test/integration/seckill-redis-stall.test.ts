/**
 * Redis stops answering mid-sale for longer than the gateway waits: CLIENT PAUSE makes the
 * real server hold every command, as a Redis stuck in a long fork or script does. Each buyer
 * must be answered before the caller gives up ("queued" once the reservation may have run,
 * "retry" only while it provably has not), and once Redis answers again every buyer told
 * "queued" has the order and no buyer told "retry" has one.
 */
import Redis from "ioredis";
import { resultEnvelope } from "../../lib/contract/envelope";
import { startMall, TestMall } from "../helpers/node";
import { arm, Buyer, expectAnswersHold, makeBuyers, newProduct } from "../helpers/seckill";

// The answer margin (250 ms before the caller's deadline) is eaten by a stall of the test
// process' event loop: late in one CI run's in-band suite the deadline answers came bunched about
// 200 ms late and 30 of 400 missed their caller (the same code passed alone, every time). A second
// try runs the sale again; answers that wait for Redis (before the fix, all 300 after the pause)
// fail both.
jest.retryTimes(1, { logErrorsBeforeRetry: true });

const REQUEST_TIMEOUT_MS = 2000;
const PAUSE_MS = 3500;
let mall: TestMall | undefined;
let pauser: Redis;

beforeAll(() => {
	pauser = new Redis("redis://127.0.0.1:6379");
});
afterEach(async () => {
	await pauser.call("CLIENT", "UNPAUSE").catch(() => undefined);
	await mall?.stop();
	mall = undefined;
}, 60000);
afterAll(() => pauser.disconnect());

type Answer = { b: Buyer; r: { status: number; body: any }; ms: number };

/** 400 buyers, five every 10 ms, straight to the stock actor; Redis hangs after the first 100. */
async function saleThroughStall(tag: string, concurrency: number) {
	// Redis commands may take longer than the gateway waits (5 s by default, against 2 s here).
	mall = await startMall({
		broker: { request_timeout: REQUEST_TIMEOUT_MS, bulkhead: { enabled: true, max_queue_size: 10000 } },
		// stock.seckill's own bulkhead (the broker's is for every other action)
		seckill: { reconcile_interval: 2, reconcile_age: 2, concurrency }
	});
	const m = mall;
	const admin = await m.http.adminToken();
	const pid = await newProduct(m, admin, { stock: 400 });
	const activity = await arm(m, admin, { product_id: pid, stock: 400 });
	const buyers = await makeBuyers(m, 400, tag);
	const calls: Promise<Answer>[] = [];
	for (let i = 0; i < buyers.length; i += 5) {
		if (i === 100) await pauser.call("CLIENT", "PAUSE", String(PAUSE_MS), "ALL");
		for (const b of buyers.slice(i, i + 5)) {
			const t0 = Date.now();
			calls.push(
				m.node.broker
					.call("stock.seckill", { product_id: pid }, { meta: { user: { id: b.id, role: 1 } } })
					.then(
						data => resultEnvelope(data, null),
						(err: Error) => ({ status: 503, body: { code: 503, error: err.name } })
					)
					.then(r => ({ b, r, ms: Date.now() - t0 }))
			);
		}
		await new Promise(r => setTimeout(r, 10));
	}
	const answers = await Promise.all(calls);
	const slowest = Math.max(...answers.map(a => a.ms));
	const byAnswer: Record<string, number> = {};
	for (const a of answers) {
		const key = [a.r.status, a.r.body.code, a.r.body.error].filter(x => x !== undefined).join("/");
		byAnswer[key] = (byAnswer[key] ?? 0) + 1;
	}
	console.log(
		`bulkhead ${concurrency}; Redis paused ${PAUSE_MS} ms; slowest answer ${slowest} ms; answers ${JSON.stringify(byAnswer)}`
	);
	// Redis held the commands and ran them when it answered again: those are the orders, and
	// only those told "queued" have one.
	const held = await expectAnswersHold(m, pid, activity.id, answers);
	expect(held.counts.orders).toBe(held.queued);
	return { answers, byAnswer, held };
}

it("answers every buyer before its caller gives up while Redis hangs, and keeps every queued order", async () => {
	const { answers, held } = await saleThroughStall("stall", 100);
	// Every answer is the stock actor's, none the caller's timeout.
	expect(answers.filter(a => a.r.body.error)).toEqual([]);
	expect(held.queued).toBe(400);
}, 120000);

it("reserves nothing for a buyer whose caller gave up while it waited in the bulkhead queue", async () => {
	const { byAnswer, held } = await saleThroughStall("stallqueue", 2);
	// A call still queued at its deadline is answered by Moleculer's timeout, or by the stock
	// actor's own "retry" just before it; either way its reservation is never sent.
	expect(held.refused).toBeGreaterThan(0);
	expect(Object.keys(byAnswer).sort()).toEqual(expect.arrayContaining(["200/0"]));
}, 120000);
