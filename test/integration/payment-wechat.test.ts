/**
 * WeChat Pay v3 (issue #23) on real servers and the provider simulator (scripts/wechat-sim.ts):
 * prepay, signed and encrypted notifies applied once, bad notifies changing nothing, the
 * query before the unpaid close, a payment after the close refunded, refunds once.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { WechatSim } from "../../scripts/wechat-sim";
import { startMall, TestMall } from "../helpers/node";
import { eventually } from "../helpers/proc";

jest.setTimeout(60000);

let mall: TestMall;
let sim: WechatSim;
let admin: string;
let keyDir: string;
let notifyUrl: string;

function freePort(): Promise<number> {
	return new Promise((resolve, reject) => {
		const s = net.createServer();
		s.once("error", reject);
		s.listen(0, "127.0.0.1", () => {
			const port = (s.address() as net.AddressInfo).port;
			s.close(() => resolve(port));
		});
	});
}

beforeAll(async () => {
	sim = new WechatSim({ retryScale: 0.001 });
	await sim.start();
	keyDir = fs.mkdtempSync(path.join(os.tmpdir(), "gomall-wechat-"));
	const port = await freePort();
	notifyUrl = `http://127.0.0.1:${port}/api/pay/wechat/notify`;
	mall = await startMall({
		http: { port, listen_sockets: 1 },
		pay: { provider: "wechat", wechat: sim.mallConfig(keyDir, notifyUrl) }
	});
	admin = await mall.http.adminToken();
});
afterAll(async () => {
	await mall?.stop();
	await sim?.stop();
	if (keyDir) fs.rmSync(keyDir, { recursive: true, force: true });
});

const db = () => (mall.node.broker.getLocalService("order") as any).adapter.db;
async function query<T = any>(sql: string, replacements: unknown[] = []): Promise<T[]> {
	const [rows] = await db().query(sql, { replacements });
	return rows;
}
const orderOf = async (no: string) => (await query("SELECT * FROM orders WHERE order_no = ?", [no]))[0];
const stockOf = async (id: number) => Number((await query("SELECT stock FROM products WHERE id = ?", [id]))[0].stock);
const ledger = (no: string) => query("SELECT * FROM payments WHERE order_no = ?", [no]);
const refundsOf = (no: string) => query("SELECT * FROM refunds WHERE order_no = ?", [no]);

/** A buyer, a product of `stock` at 12.34 and a pending order of `quantity` (total 24.68 → 2468 fen). */
async function pendingOrder(stock = 5, quantity = 2) {
	const u = await mall.http.newUser("pay");
	const p = (await mall.http.post("/api/product", { name: "Tea", price: 12.34, stock }, admin)).body.data as {
		id: number;
	};
	const r = await mall.http.post("/api/order", { product_id: p.id, quantity }, u.token);
	expect(r.status).toBe(200);
	return { u, p, no: r.body.data.order_no as string };
}

async function prepay(no: string, token: string) {
	const r = await mall.http.post(`/api/order/${no}/pay`, { pay_type: 2 }, token);
	expect([r.status, r.body.code]).toEqual([200, 0]);
	return r.body.data as { order_no: string; code_url: string; expires_at: string };
}

/** The order's deadline moved to now: the next close (here the sweep) acts on it. */
async function expire(no: string) {
	await query("UPDATE orders SET expires_at = NOW(3) - INTERVAL 1 SECOND WHERE order_no = ?", [no]);
}

const notify = (n: { headers: Record<string, string>; body: string }) => sim.post(notifyUrl, n);

async function notifyAnswer(n: { headers: Record<string, string>; body: string }) {
	const r = await fetch(notifyUrl, {
		method: "POST",
		headers: { "Content-Type": "application/json", ...n.headers },
		body: n.body
	});
	const text = await r.text();
	return { status: r.status, body: text ? JSON.parse(text) : null };
}

async function metric(name: string, labels: string): Promise<number> {
	const text = await (await fetch(`${mall.baseUrl}/metrics`)).text();
	const line = text.split("\n").find(l => l.startsWith(`${name}{`) && l.includes(labels));
	return line ? Number(line.split(" ").pop()) : 0;
}

describe("WeChat Pay: prepay and notify", () => {
	it("prepays (the order stays pending, a repeated pay reuses the prepay), is paid by the notify, once for 5 + 3 resends", async () => {
		const { u, p, no } = await pendingOrder();
		const first = await prepay(no, u.token);
		expect(first.code_url).toMatch(/^weixin:\/\/wxpay\/bizpayurl\?pr=/);
		expect(Date.parse(first.expires_at)).toBeGreaterThan(Date.now());
		expect((await orderOf(no)).status).toBe(1);
		const [a, b] = await Promise.all([prepay(no, u.token), prepay(no, u.token)]);
		expect([a.code_url, b.code_url]).toEqual([first.code_url, first.code_url]);
		expect(sim.calls.filter(c => c === "POST /v3/pay/transactions/native").length).toBeGreaterThanOrEqual(1);
		expect(sim.transactions.get(no)!.amount.total).toBe(2468);

		const paid = sim.pay(no);
		expect(await paid.delivered).toBe(true);
		const order = await orderOf(no);
		expect([order.status, order.pay_type]).toEqual([2, 2]);
		const paidAt = new Date(order.paid_at).getTime();
		const dupBefore = await metric("gomall_payment_notifies_total", 'verdict="duplicate"');

		const again = sim.transactionNotify(paid.tx);
		for (let i = 0; i < 5; i++) expect(await notify(again)).toBe(204);
		const parallel = await Promise.all([0, 1, 2].map(() => notify(sim.transactionNotify(paid.tx))));
		expect(parallel).toEqual([204, 204, 204]);

		const rows = await ledger(no);
		expect(rows).toHaveLength(1);
		expect(rows[0]).toMatchObject({ transaction_id: paid.tx.transaction_id, amount_fen: 2468, outcome: "paid" });
		const after = await orderOf(no);
		expect([after.status, new Date(after.paid_at).getTime()]).toEqual([2, paidAt]);
		expect(await stockOf(p.id)).toBe(3);
		expect(await metric("gomall_payment_notifies_total", 'verdict="duplicate"')).toBe(dupBefore + 8);
		// Paid: pay answers "already paid", no new prepay.
		const pay = await mall.http.post(`/api/order/${no}/pay`, { pay_type: 2 }, u.token);
		expect([pay.status, pay.body.code]).toEqual([409, 30007]);
	});

	it("refuses alipay (pay_type 1) while the provider is WeChat Pay", async () => {
		const { u, no } = await pendingOrder();
		const r = await mall.http.post(`/api/order/${no}/pay`, { pay_type: 1 }, u.token);
		expect([r.status, r.body.code]).toEqual([400, 30008]);
	});

	it("answers every bad notify 4xx FAIL and changes nothing; the good one then applies", async () => {
		const { u, no } = await pendingOrder();
		await prepay(no, u.token);
		const { tx } = sim.pay(no, { notify: "never" });
		const good = sim.transactionNotify(tx);
		const otherKey = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
		const resource = (alter: (r: any) => void) => sim.transactionNotify(tx, alter);
		const encrypted = (opts: Parameters<WechatSim["buildNotify"]>[3]) =>
			sim.buildNotify("TRANSACTION.SUCCESS", "transaction", JSON.parse(JSON.stringify(sim.transactions.get(no))), opts);
		const bad: Record<string, { headers: Record<string, string>; body: string }> = {
			"wrong signature": {
				headers: { ...good.headers, "Wechatpay-Signature": resource(() => undefined).headers["Wechatpay-Signature"] },
				body: good.body
			},
			"another key": encrypted({ signWith: otherKey }),
			"stale timestamp": encrypted({ timestamp: Math.floor(Date.now() / 1000) - 301 }),
			"tampered ciphertext": encrypted({ tamper: true }),
			"another APIv3 key": encrypted({ apiv3Key: crypto.randomBytes(16).toString("hex") }),
			"amount 1 fen off": resource(r => (r.amount.total += 1)),
			"another mchid": resource(r => (r.mchid = "1900000110")),
			"another appid": resource(r => (r.appid = "wx0000000000000000")),
			"an unknown order": resource(r => (r.out_trade_no = "99999999999999999999")),
			"not SUCCESS": resource(r => (r.trade_state = "NOTPAY")),
			"no signature headers": { headers: {}, body: good.body },
			"another platform serial": {
				headers: { ...good.headers, "Wechatpay-Serial": "5157F09EFDC096DE15EBE81A47057A72" },
				body: good.body
			}
		};
		const refusedBefore = await metric("gomall_payment_notifies_total", 'verdict="refused"');
		for (const [why, n] of Object.entries(bad)) {
			const r = await notifyAnswer(n);
			expect({ why, status: r.status >= 400 && r.status < 500, code: r.body?.code }).toEqual({
				why,
				status: true,
				code: "FAIL"
			});
			expect(typeof r.body.message).toBe("string");
		}
		const o = await orderOf(no);
		expect([o.status, o.paid_at]).toEqual([1, null]);
		expect(await ledger(no)).toHaveLength(0);
		expect(await metric("gomall_payment_notifies_total", 'verdict="refused"')).toBe(
			refusedBefore + Object.keys(bad).length
		);
		expect(await notify(good)).toBe(204);
		expect((await orderOf(no)).status).toBe(2);
	});
});

describe("WeChat Pay: the unpaid close asks the provider first", () => {
	it("finds a payment whose notify never came: paid, not closed, the stock kept", async () => {
		const { u, p, no } = await pendingOrder(4, 1);
		await prepay(no, u.token);
		sim.pay(no, { notify: "never" });
		await expire(no);
		expect(await mall.node.broker.call("order.sweep")).toEqual({ closed: 0 });
		const o = await orderOf(no);
		expect([o.status, o.pay_type]).toEqual([2, 2]);
		expect(await ledger(no)).toMatchObject([{ outcome: "paid", source: "query" }]);
		expect(await stockOf(p.id)).toBe(3);
		// A late notify for it now is a duplicate.
		expect(await notify(sim.transactionNotify(sim.transactions.get(no)!))).toBe(204);
		expect(await ledger(no)).toHaveLength(1);
	});

	it("closes an unpaid order at the provider, then locally, the stock back once", async () => {
		const { u, p, no } = await pendingOrder(4, 2);
		await prepay(no, u.token);
		await expire(no);
		expect(await mall.node.broker.call("order.sweep")).toEqual({ closed: 1 });
		expect(sim.transactions.get(no)!.trade_state).toBe("CLOSED");
		expect((await orderOf(no)).status).toBe(5);
		expect(await stockOf(p.id)).toBe(4);
		expect(await mall.node.broker.call("order.sweep")).toEqual({ closed: 0 });
		expect(await stockOf(p.id)).toBe(4);
	});

	it("refunds a payment that arrives after the close at once; the stock is counted once", async () => {
		const { u, p, no } = await pendingOrder(4, 2);
		await prepay(no, u.token);
		await expire(no);
		expect(await mall.node.broker.call("order.sweep")).toEqual({ closed: 1 });
		expect(await stockOf(p.id)).toBe(4);
		// The provider's close and the buyer's payment crossed: it reports a payment anyway.
		const { delivered } = sim.pay(no, { force: true });
		expect(await delivered).toBe(true);
		await eventually(async () => (await refundsOf(no))[0]?.status === "SUCCESS", 10000, 50);
		const [refund] = await refundsOf(no);
		expect(refund).toMatchObject({ reason: "paid_after_close", amount_fen: 2468, out_refund_no: `R${no}` });
		expect([...sim.refunds.values()].filter(r => r.out_trade_no === no)).toHaveLength(1);
		expect(await ledger(no)).toMatchObject([{ outcome: "refund" }]);
		expect((await orderOf(no)).status).toBe(5);
		expect(await stockOf(p.id)).toBe(4);
	});
});

describe("WeChat Pay: refunds", () => {
	it("refunds once for two concurrent requests: one refund at the provider, the stock back once, settled by its notify", async () => {
		const { u, p, no } = await pendingOrder(5, 2);
		await prepay(no, u.token);
		expect(await sim.pay(no).delivered).toBe(true);
		expect(await stockOf(p.id)).toBe(3);
		const [a, b] = await Promise.all([
			mall.http.post(`/api/order/${no}/refund`, {}, u.token),
			mall.http.post(`/api/order/${no}/refund`, {}, u.token)
		]);
		expect([a.status, b.status]).toEqual([200, 200]);
		expect([a.body.data.status, b.body.data.status]).toEqual([6, 6]);
		expect(a.body.data.refund.out_refund_no).toBe(`R${no}`);
		expect([...sim.refunds.values()].filter(r => r.out_trade_no === no)).toHaveLength(1);
		expect(await stockOf(p.id)).toBe(5);
		await eventually(async () => (await refundsOf(no))[0]?.status === "SUCCESS", 10000, 50);
		const again = await mall.http.post(`/api/order/${no}/refund`, {}, u.token);
		expect([again.status, again.body.data.refund.status]).toEqual([200, "SUCCESS"]);
		expect(await refundsOf(no)).toHaveLength(1);
		expect(await stockOf(p.id)).toBe(5);
		// A resent refund notify is a duplicate.
		const r = [...sim.refunds.values()].find(x => x.out_trade_no === no)!;
		expect(await notify(sim.refundNotifyOf(r))).toBe(204);
		expect(await stockOf(p.id)).toBe(5);
	});

	it("stops sending a refund the provider refuses for good (left for an operator); one it refuses for now is sent again", async () => {
		const refundCalls = () => sim.calls.filter(c => c === "POST /v3/refund/domestic/refunds").length;
		const refundOnce = async (refusal: { status: number; code: string }) => {
			const { u, no } = await pendingOrder(5, 1);
			await prepay(no, u.token);
			expect(await sim.pay(no).delivered).toBe(true);
			sim.refundRefusal = refusal;
			try {
				const r = await mall.http.post(`/api/order/${no}/refund`, {}, u.token);
				expect([r.status, r.body.data.status]).toEqual([200, 6]);
				const before = refundCalls();
				await mall.node.broker.call("order.resendRefunds");
				return { no, resent: refundCalls() - before, row: (await refundsOf(no))[0] };
			} finally {
				sim.refundRefusal = null;
			}
		};
		const final = await refundOnce({ status: 403, code: "USER_ACCOUNT_ABNORMAL" });
		expect([final.row.status, final.resent]).toEqual(["REFUSED", 0]);
		const later = await refundOnce({ status: 429, code: "FREQUENCY_LIMITED" });
		expect([later.row.status, later.resent]).toEqual(["PENDING", 1]);
		await mall.node.broker.call("order.resendRefunds");
		expect((await refundsOf(later.no))[0].status).not.toBe("PENDING");
	});

	it("refuses a refund of an unpaid order (30009) and hides another buyer's (404)", async () => {
		const { u, no } = await pendingOrder();
		const r = await mall.http.post(`/api/order/${no}/refund`, {}, u.token);
		expect([r.status, r.body.code]).toEqual([409, 30009]);
		const other = await mall.http.newUser();
		const o = await mall.http.post(`/api/order/${no}/refund`, {}, other.token);
		expect([o.status, o.body.code]).toEqual([404, 30001]);
	});
});
