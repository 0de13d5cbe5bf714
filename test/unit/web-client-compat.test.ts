import { adaptForGoClient, goClientRule } from "../web-client/go-client-compat";

const json = { "content-type": "application/json; charset=utf-8" };
const body = (v: unknown) => Buffer.from(JSON.stringify(v));

describe("the Go client's compatibility adapter (web-client driver only)", () => {
	test("only GET /api/cart, GET /api/order and POST /api/order/checkout, query ignored", () => {
		expect(goClientRule("GET", "/api/cart")?.field).toBe("items");
		expect(goClientRule("GET", "/api/order?page=1")?.field).toBe("list");
		expect(goClientRule("POST", "/api/order/checkout")?.field).toBe("orders");
		for (const [m, u] of [
			["POST", "/api/cart"],
			["PUT", "/api/cart"],
			["GET", "/api/order/123"],
			["GET", "/api/cart/clear"],
			["POST", "/api/order"],
			["GET", "/api/orders"]
		]) {
			expect(goClientRule(m, u)).toBeUndefined();
		}
	});

	test("a successful envelope's data becomes the array, the rest of the envelope kept", () => {
		const out = adaptForGoClient(
			goClientRule("GET", "/api/order")!,
			200,
			json,
			body({
				code: 0,
				message: "success",
				data: { list: [{ id: 1 }], total: 1, page: 1, page_size: 10, total_page: 1 },
				trace_id: "t"
			})
		);
		expect(JSON.parse(out!.toString())).toEqual({ code: 0, message: "success", data: [{ id: 1 }], trace_id: "t" });
	});

	test("anything else passes through untouched (null)", () => {
		const rule = goClientRule("GET", "/api/cart")!;
		const ok = body({ code: 0, data: { items: [] } });
		expect(adaptForGoClient(rule, 401, json, body({ code: 10006, data: null }))).toBeNull();
		expect(adaptForGoClient(rule, 200, json, body({ code: 50001, data: { items: [] } }))).toBeNull();
		expect(adaptForGoClient(rule, 200, json, body({ code: 0, data: [] }))).toBeNull();
		expect(adaptForGoClient(rule, 200, json, body({ code: 0, data: { items: "x" } }))).toBeNull();
		expect(adaptForGoClient(rule, 200, { "content-type": "text/plain" }, ok)).toBeNull();
		expect(adaptForGoClient(rule, 200, { ...json, "content-encoding": "gzip" }, ok)).toBeNull();
		expect(adaptForGoClient(rule, 200, json, Buffer.from("{not json"))).toBeNull();
	});
});
