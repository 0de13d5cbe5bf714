/**
 * pay.provider direct (dev and test, the Go client's flow): pay completes at once, as before;
 * a refund completes at once too, the stock back once (issue #23).
 */
import http from "node:http";
import SwaggerParser from "@apidevtools/swagger-parser";
import type { AddressInfo } from "node:net";
import { WechatSim } from "../../scripts/wechat-sim";
import { startMall, TestMall } from "../helpers/node";

let mall: TestMall;
let admin: string;

beforeAll(async () => {
	mall = await startMall();
	admin = await mall.http.adminToken();
});
afterAll(() => mall?.stop());

const db = () => (mall.node.broker.getLocalService("order") as any).adapter.db;
const stockOf = async (id: number) => {
	const [[row]] = (await db().query(`SELECT stock FROM products WHERE id = ${Number(id)}`)) as any;
	return Number(row.stock);
};

describe("direct payments", () => {
	it("pays at once and refunds at once: status 6, the stock back once, a repeated refund the same answer", async () => {
		const u = await mall.http.newUser();
		const p = (await mall.http.post("/api/product", { name: "Mug", price: 9.5, stock: 4 }, admin)).body.data;
		const no = (await mall.http.post("/api/order", { product_id: p.id, quantity: 3 }, u.token)).body.data.order_no;
		const paid = await mall.http.post(`/api/order/${no}/pay`, { pay_type: 1 }, u.token);
		expect(paid.body.data).toMatchObject({ status: 2, pay_type: 1 });
		const [a, b] = await Promise.all([
			mall.http.post(`/api/order/${no}/refund`, {}, u.token),
			mall.http.post(`/api/order/${no}/refund`, {}, u.token)
		]);
		expect([a.status, b.status]).toEqual([200, 200]);
		expect(a.body.data).toMatchObject({ status: 6, refund: { out_refund_no: `R${no}`, status: "SUCCESS" } });
		expect(b.body.data).toMatchObject({ status: 6, refund: { status: "SUCCESS" } });
		expect(await stockOf(p.id)).toBe(4);
		const [rows] = (await db().query(
			`SELECT provider, amount_fen, reason FROM refunds WHERE order_no = '${no}'`
		)) as any;
		expect(rows).toEqual([{ provider: "direct", amount_fen: 2850, reason: "buyer" }]);
		const list = await mall.http.get("/api/order?status=6", u.token);
		expect(list.body.data.list.map((o: any) => o.order_no)).toEqual([no]);
		// The notify route exists, but with no provider configured refuses everything.
		const n = await fetch(`${mall.baseUrl}/api/pay/wechat/notify`, { method: "POST", body: "{}" });
		expect(n.status).toBe(404);
		expect(await n.json()).toEqual({ code: "FAIL", message: "no payment provider is configured" });
	});
});

describe("the OpenAPI document", () => {
	it("lists the refund and notify routes and the payment codes, and stays valid", async () => {
		const doc = (await (await fetch(`${mall.baseUrl}/swagger/doc.json`)).json()) as any;
		await expect(SwaggerParser.validate(structuredClone(doc))).resolves.toBeTruthy();
		const refund = doc.paths["/api/order/{order_no}/refund"].post;
		expect(refund.security).toEqual([{ bearerAuth: [] }]);
		expect(refund.description).toContain("30009");
		expect(doc.paths["/api/order/{order_no}/pay"].post.description).toMatch(/30008.*30011.*30010/);
		expect(doc.paths["/api/order/{order_no}/pay"].post.responses["502"]).toBeDefined();
		const notify = doc.paths["/api/pay/wechat/notify"].post;
		expect(notify.security).toBeUndefined();
		expect(Object.keys(notify.responses)).toEqual(["204", "400", "401", "404", "409", "503"]);
	});
});

describe("the simulator's notify schedule", () => {
	it("sends a notify again on the (compressed) retry schedule until it gets a 2xx", async () => {
		const answers = [500, 0, 400, 204];
		let n = 0;
		const target = http.createServer((req, res) => {
			req.resume();
			const status = answers[Math.min(n++, answers.length - 1)];
			if (status === 0) return req.socket.destroy();
			res.writeHead(status);
			res.end();
		});
		await new Promise<void>(r => target.listen(0, "127.0.0.1", r));
		const sim = new WechatSim({ retryScale: 0.001 });
		await sim.start();
		try {
			const url = `http://127.0.0.1:${(target.address() as AddressInfo).port}/notify`;
			const built = sim.buildNotify("TRANSACTION.SUCCESS", "transaction", { out_trade_no: "1" });
			expect(await sim.deliver({ url, ...built })).toBe(true);
			expect(sim.deliveries.map(d => d.status)).toEqual([500, 0, 400, 204]);
		} finally {
			await sim.stop();
			target.close();
		}
	});
});
