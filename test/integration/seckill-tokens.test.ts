import { activityKeys } from "../../lib/domain/seckill";
import { captchaAnswerHash, captchaKey, makeSaleToken, saleTokenKey } from "../../lib/domain/sale-token";
import { createRedis } from "../../lib/storage/redis";
import { startMall, TestMall } from "../helpers/node";
import { arm, Buyer, buy, counts, Counts, drained, expectInvariant, makeBuyers, newProduct } from "../helpers/seckill";

let mall: TestMall;
let admin: string;
let redis: ReturnType<typeof createRedis>;

beforeAll(async () => {
	mall = await startMall();
	admin = await mall.http.adminToken();
	redis = createRedis(mall.cfg.redis, mall.cfg.namespace);
});
afterAll(async () => {
	redis?.disconnect();
	await mall?.stop();
});

async function saleToken(b: Buyer, pid: number): Promise<string> {
	const r = await mall.http.get(`/api/seckill/token?product_id=${pid}`, b.token);
	if (r.status !== 200) throw new Error(`token refused: ${r.status} ${JSON.stringify(r.body)}`);
	expect(r.body.data).toEqual({ token: expect.any(String), expires_at: expect.any(String) });
	return r.body.data.token;
}

function buyWith(b: Buyer, pid: number, token: string, via: "body" | "header" = "body") {
	return via === "body"
		? mall.http.request("POST", "/api/seckill", { body: { product_id: pid, sale_token: token }, token: b.token })
		: mall.http.request("POST", "/api/seckill", {
				body: { product_id: pid },
				token: b.token,
				headers: { "x-sale-token": token }
			});
}

/** What a refused request must leave as it was: Redis stock and reservations, MySQL stock and orders. */
const state = (c: Counts) => ({
	redisRemaining: c.redisRemaining,
	reservations: c.reservations,
	dbStock: c.dbStock,
	orders: c.orders
});

describe("a sale that requires tokens", () => {
	it("refuses a request without a token, with a forged one, another user's, an expired one, a reused one and the previous arming's, each changing nothing", async () => {
		const pid = await newProduct(mall, admin);
		const first = await arm(mall, admin, { product_id: pid, stock: 10, limit_per_user: 2, require_token: true });
		expect(first).toMatchObject({ require_token: true, captcha: false });
		const [a, b, c] = await makeBuyers(mall, 3, "tokref");
		const key = saleTokenKey(mall.cfg.jwt.secret);
		const before = state(await drained(mall, first.id));
		expect(before).toEqual({ redisRemaining: 10, reservations: 0, dbStock: 10, orders: 0 });

		const missing = await buy(mall, a, pid);
		expect([missing.status, missing.body.code]).toEqual([403, 60012]);
		const forged = await buyWith(a, pid, `${Date.now() + 60000}.${"A".repeat(22)}.${"B".repeat(43)}`);
		expect([forged.status, forged.body.code]).toEqual([403, 60012]);
		const othersToken = await saleToken(b, pid);
		const others = await buyWith(a, pid, othersToken);
		expect([others.status, others.body.code]).toEqual([403, 60012]);
		const expired = makeSaleToken(key, { userId: a.id, arming: first.arming_id, productId: pid }, Date.now() - 1);
		const late = await buyWith(a, pid, expired);
		expect([late.status, late.body.code]).toEqual([403, 60012]);
		// Refused before the script: nothing in Redis, not even a spent nonce.
		expect(state(await counts(mall, first.id))).toEqual(before);
		expect(await redis.hlen(activityKeys(first.arming_id).tokens)).toBe(0);

		// A token wins once; sent again it is refused as used, though the buyer's limit (2) has room.
		const token = await saleToken(a, pid);
		const won = await buyWith(a, pid, token);
		expect(won.status).toBe(200);
		const afterWin = state(await drained(mall, first.id));
		expect(afterWin).toEqual({ redisRemaining: 9, reservations: 1, dbStock: 9, orders: 1 });
		const again = await buyWith(a, pid, token, "header");
		expect([again.status, again.body.code, again.body.message]).toEqual([403, 60012, expect.stringMatching(/used/)]);
		expect(state(await drained(mall, first.id))).toEqual(afterWin);
		// A fresh token is what the buyer lacked (and the header carries one as well as the body).
		expect((await buyWith(a, pid, await saleToken(a, pid), "header")).status).toBe(200);
		// The other buyer's own token is still good: refusing it to a thief did not spend it.
		expect((await buyWith(b, pid, othersToken)).status).toBe(200);

		// A token of the previous arming is refused by the new one.
		const old = await saleToken(c, pid);
		const second = await arm(mall, admin, { product_id: pid, stock: 10, require_token: true });
		const fresh = state(await drained(mall, second.id));
		const stale = await buyWith(c, pid, old);
		expect([stale.status, stale.body.code]).toEqual([403, 60012]);
		expect(state(await drained(mall, second.id))).toEqual(fresh);
		expect((await buyWith(c, pid, await saleToken(c, pid))).status).toBe(200);
	});

	it("opens the token endpoint only at the sale's start, and only for an armed product", async () => {
		const pid = await newProduct(mall, admin);
		await arm(mall, admin, {
			product_id: pid,
			stock: 10,
			require_token: true,
			start_time: new Date(Date.now() + 3600_000).toISOString()
		});
		const [a] = await makeBuyers(mall, 1, "tokearly");
		const early = await mall.http.get(`/api/seckill/token?product_id=${pid}`, a.token);
		expect([early.status, early.body.code]).toEqual([400, 60001]);
		const early2 = await mall.http.get(`/api/seckill/captcha?product_id=${pid}`, a.token);
		expect([early2.status, early2.body.code]).toEqual([400, 60001]);
		const none = await mall.http.get(`/api/seckill/token?product_id=${await newProduct(mall, admin)}`, a.token);
		expect([none.status, none.body.code]).toEqual([404, 60008]);
		const anonymous = await mall.http.get(`/api/seckill/token?product_id=${pid}`);
		expect(anonymous.status).toBe(401);
	});

	it("leaves a sale without tokens as it was (a token is handed out, and ignored)", async () => {
		const pid = await newProduct(mall, admin);
		const activity = await arm(mall, admin, { product_id: pid, stock: 10 });
		expect(activity).toMatchObject({ require_token: false, captcha: false });
		const [a, b] = await makeBuyers(mall, 2, "toknone");
		expect((await buy(mall, a, pid)).status).toBe(200);
		expect((await buyWith(b, pid, await saleToken(b, pid))).status).toBe(200);
		expect(state(await drained(mall, activity.id))).toEqual({
			redisRemaining: 8,
			reservations: 2,
			dbStock: 8,
			orders: 2
		});
	});
});

describe("a sale with a captcha", () => {
	/** The answer, found as a bot with the mall's secret could: trying every sum the captcha can draw. */
	async function solve(b: Buyer, pid: number, captchaId: string): Promise<string> {
		const kept = await redis.get(`seckill:captcha:${captchaId}`);
		const ck = captchaKey(mall.cfg.jwt.secret);
		for (let n = 2; n <= 40; n++) if (captchaAnswerHash(ck, captchaId, b.id, pid, String(n)) === kept) return String(n);
		throw new Error("no answer found");
	}
	async function captcha(b: Buyer, pid: number): Promise<string> {
		const r = await mall.http.get(`/api/seckill/captcha?product_id=${pid}`, b.token);
		expect(r.status).toBe(200);
		expect(r.body.data).toEqual({ captcha_id: expect.any(String), svg: expect.stringMatching(/^<svg[\s\S]*<\/svg>$/) });
		return r.body.data.captcha_id;
	}
	const tokenWith = (b: Buyer, pid: number, id: string, answer: string) =>
		mall.http.get(
			`/api/seckill/token?product_id=${pid}&captcha_id=${encodeURIComponent(id)}&captcha_answer=${answer}`,
			b.token
		);

	it("hands a token out only for the right answer, once per captcha, to the buyer it was drawn for", async () => {
		const pid = await newProduct(mall, admin);
		const activity = await arm(mall, admin, { product_id: pid, stock: 5, captcha: true });
		// A captcha is how a token is earned, so it implies requiring one.
		expect(activity).toMatchObject({ require_token: true, captcha: true });
		const [a, b] = await makeBuyers(mall, 2, "tokcap");

		const bare = await mall.http.get(`/api/seckill/token?product_id=${pid}`, a.token);
		expect([bare.status, bare.body.code]).toEqual([400, 60013]);

		const id = await captcha(a, pid);
		const answer = await solve(a, pid, id);
		const wrong = await tokenWith(a, pid, id, String(Number(answer) + 1));
		expect([wrong.status, wrong.body.code]).toEqual([400, 60013]);
		// One try per captcha: the right answer after a wrong one is refused too.
		const retried = await tokenWith(a, pid, id, answer);
		expect([retried.status, retried.body.code]).toEqual([400, 60013]);

		// Another buyer's captcha, rightly answered, is not this buyer's.
		const theirs = await captcha(b, pid);
		const stolen = await tokenWith(a, pid, theirs, await solve(b, pid, theirs));
		expect([stolen.status, stolen.body.code]).toEqual([400, 60013]);

		const id2 = await captcha(a, pid);
		const right = await tokenWith(a, pid, id2, await solve(a, pid, id2));
		expect(right.status).toBe(200);
		expect((await buyWith(a, pid, right.body.data.token)).status).toBe(200);
		// Used up on success too.
		expect((await tokenWith(a, pid, id2, "0")).body.code).toBe(60013);
		expect(state(await drained(mall, activity.id))).toEqual({
			redisRemaining: 4,
			reservations: 1,
			dbStock: 4,
			orders: 1
		});
	});
});

describe("2,000 buyers with tokens race for 500 units", () => {
	it("sells exactly 500, one per buyer, with exact counts in Redis and MySQL", async () => {
		const pid = await newProduct(mall, admin);
		const activity = await arm(mall, admin, { product_id: pid, stock: 500, require_token: true });
		const buyers = await makeBuyers(mall, 2000, "tokrace");
		const tokens = await Promise.all(buyers.map(b => saleToken(b, pid)));
		const results = await Promise.all(buyers.map((b, i) => buyWith(b, pid, tokens[i])));
		const wins = results.filter(r => r.status === 200);
		expect(wins).toHaveLength(500);
		expect([...new Set(results.filter(r => r.status !== 200).map(r => `${r.status}/${r.body.code}`))]).toEqual([
			"409/60003"
		]);
		const c = await drained(mall, activity.id, 60000);
		expect(c).toMatchObject({
			initial: 500,
			redisRemaining: 0,
			reservations: 500,
			dbStock: 0,
			orders: 500,
			liveOrders: 500,
			distinctBuyerSeq: 500
		});
		expectInvariant(c);
		// Every win spent its token's nonce in the script.
		expect(await redis.hlen(activityKeys(activity.arming_id).tokens)).toBeGreaterThanOrEqual(500);
		// And none of them buys again.
		const replay = await Promise.all(buyers.slice(0, 50).map((b, i) => buyWith(b, pid, tokens[i])));
		expect(replay.every(r => r.status !== 200)).toBe(true);
		expect(state(await counts(mall, activity.id))).toEqual(state(c));
	});
});
