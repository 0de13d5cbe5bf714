/**
 * The drain gives way to the sale (README): on a node that runs the stock and order actors
 * together, the order drain holds its messages while the stock actor is reserving, at most
 * seckill.batch_hold_ms, and writes them once the reservations are quiet. The mall runs in this
 * process, so the test holds the process' tally busy itself (as a sale's opening does) and
 * watches the orders table.
 */
import Redis from "ioredis";
import { reservationActivity } from "../../lib/domain/reservation-activity";
import { startMall, TestMall } from "../helpers/node";
import { eventually } from "../helpers/proc";
import { arm, buy, drained, expectInvariant, makeBuyers, newProduct, sql } from "../helpers/seckill";

const HOLD_MS = 2500;
let mall: TestMall;
let admin: string;

beforeAll(async () => {
	// The shared limiter on (the test configuration turns it off), with the default limits.
	mall = await startMall({ seckill: { batch_hold_ms: HOLD_MS }, rate_limit: { enabled: true, distributed: true } });
	admin = await mall.http.adminToken();
});
afterAll(() => mall?.stop());

const orders = async (activityId: number) =>
	Number((await sql(mall, "SELECT COUNT(*) AS n FROM orders WHERE activity_id = ?", [activityId]))[0].n);

/** The moment (Date.now()) the activity's orders reach `n`. */
async function ordersReach(activityId: number, n: number, timeoutMs: number): Promise<number> {
	await eventually(async () => (await orders(activityId)) >= n, timeoutMs, 20);
	return Date.now();
}

it("writes no order while this process reserves, and every order once it is quiet", async () => {
	const pid = await newProduct(mall, admin);
	const activity = await arm(mall, admin, { product_id: pid, stock: 5 });
	const buyers = await makeBuyers(mall, 5, "hold");
	reservationActivity.begin();
	let ended = false;
	try {
		const answers = await Promise.all(buyers.map(b => buy(mall, b, pid)));
		expect(answers.map(a => a.status)).toEqual([200, 200, 200, 200, 200]);
		// Queued, confirmed, and not written while the reservations run.
		await new Promise(r => setTimeout(r, 1000));
		expect(await orders(activity.id)).toBe(0);
		const poll = await mall.http.get(`/api/seckill/result?product_id=${pid}`, buyers[0].token);
		expect(poll.body.data.status).toBe("queued");
		reservationActivity.end();
		ended = true;
		const quiet = Date.now();
		// All five in one go, well before the hold would have run out.
		expect((await ordersReach(activity.id, 5, 5000)) - quiet).toBeLessThan(1000);
	} finally {
		if (!ended) reservationActivity.end();
	}
	const c = await drained(mall, activity.id);
	expect(c).toMatchObject({ reservations: 5, orders: 5, liveOrders: 5, redisRemaining: 0, dbStock: 0 });
	expectInvariant(c);
});

it("holds at most seckill.batch_hold_ms: reservations that never pause do not starve the orders", async () => {
	const pid = await newProduct(mall, admin);
	const activity = await arm(mall, admin, { product_id: pid, stock: 2 });
	const buyers = await makeBuyers(mall, 2, "holdmax");
	reservationActivity.begin();
	try {
		const queued = Date.now();
		await Promise.all(buyers.map(b => buy(mall, b, pid)));
		const written = await ordersReach(activity.id, 2, HOLD_MS + 5000);
		expect(written - queued).toBeGreaterThanOrEqual(HOLD_MS - 500);
		expect(written - queued).toBeLessThan(HOLD_MS + 2000);
	} finally {
		reservationActivity.end();
	}
	expectInvariant(await drained(mall, activity.id));
});

it("never holds the orders of a node that is not reserving", async () => {
	const pid = await newProduct(mall, admin);
	const activity = await arm(mall, admin, { product_id: pid, stock: 1 });
	const [b] = await makeBuyers(mall, 1, "holdnone");
	const queued = Date.now();
	expect((await buy(mall, b, pid)).status).toBe(200);
	expect((await ordersReach(activity.id, 1, 5000)) - queued).toBeLessThan(HOLD_MS - 1000);
});

it("counts a buyer's request from the shared limiter on: the opening's first wait is the limiter's", async () => {
	const pid = await newProduct(mall, admin);
	await arm(mall, admin, { product_id: pid, stock: 1 });
	const [b] = await makeBuyers(mall, 1, "holdlimiter");
	const pauser = new Redis(mall.cfg.redis.url);
	try {
		// Redis holds every script for a while (the limiter's is the first a buyer's request
		// runs), as a saturated opening's event loop holds their answers.
		await pauser.call("CLIENT", "PAUSE", "1500", "WRITE");
		const answer = buy(mall, b, pid);
		let seen = false;
		// Within the limiter's own timeout (500 ms, then it lets the request through to the script).
		await eventually(async () => (seen = reservationActivity.busy(0)), 350, 5).catch(() => undefined);
		expect(seen).toBe(true);
		expect((await answer).status).toBe(200);
	} finally {
		await pauser.call("CLIENT", "UNPAUSE").catch(() => undefined);
		pauser.disconnect();
	}
});
