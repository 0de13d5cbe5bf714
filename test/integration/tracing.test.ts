import http from "node:http";
import type { AddressInfo } from "node:net";
import { HttpClient, removeClusterEnv } from "../helpers/node";
import { clusterEnv, eventually, freePort, NodeProcess, spawnNode } from "../helpers/proc";

interface ReceivedSpan {
	traceId: string;
	spanId: string;
	parentSpanId?: string;
	name: string;
	node: string;
	attributes: Record<string, unknown>;
}

// An OTLP/HTTP receiver of the test's own: it records what the nodes export.
const received: ReceivedSpan[] = [];
let receiver: http.Server;
const nodes: NodeProcess[] = [];
const env = clusterEnv();

function value(v: any): unknown {
	return v?.stringValue ?? (v?.intValue !== undefined ? Number(v.intValue) : (v?.doubleValue ?? v?.boolValue));
}

beforeAll(async () => {
	receiver = http.createServer((req, res) => {
		let body = "";
		req.on("data", d => (body += d));
		req.on("end", () => {
			const doc = JSON.parse(body);
			for (const rs of doc.resourceSpans ?? []) {
				const node = String(value(rs.resource.attributes.find((a: any) => a.key === "service.instance.id")?.value));
				for (const ss of rs.scopeSpans ?? [])
					for (const s of ss.spans ?? [])
						received.push({
							traceId: s.traceId,
							spanId: s.spanId,
							parentSpanId: s.parentSpanId || undefined,
							name: s.name,
							node,
							attributes: Object.fromEntries((s.attributes ?? []).map((a: any) => [a.key, value(a.value)]))
						});
			}
			res.writeHead(200, { "content-type": "application/json" });
			res.end("{}");
		});
	});
	await new Promise<void>(r => receiver.listen(0, "127.0.0.1", () => r()));
});

afterAll(async () => {
	for (const n of nodes) n.kill("SIGKILL");
	await Promise.all(nodes.map(n => n.exited));
	receiver?.close();
	await removeClusterEnv(env);
});

it("exports spans from two nodes over OTLP as one trace with correct parent links and GoMall attributes", async () => {
	const endpoint = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/v1/traces`;
	const port = await freePort();
	const common = { ...env, GOMALL_OTLP_ENDPOINT: endpoint };
	nodes.push(spawnNode(["--services", "api"], { ...common, GOMALL_NODE_ID: "edge", GOMALL_HTTP_PORT: String(port) }));
	nodes.push(
		spawnNode(["--services", "user,product,cart,stock,order"], {
			...common,
			GOMALL_NODE_ID: "core",
			GOMALL_HTTP_PORT: "0"
		})
	);
	const api = new HttpClient(`http://127.0.0.1:${port}`);
	// Ready too: the edge gateway serves authenticated routes once it has the ended sessions from "core".
	await eventually(
		async () => (await api.get("/api/product")).status === 200 && (await api.get("/ready")).status === 200,
		40000
	);

	const reg = await api.post("/api/user/register", { username: "traced_user", password: "traced-password-1" });
	const { token, user } = reg.body.data;
	const cart = await api.post("/api/cart", { product_id: 4242, quantity: 1 }, token);
	expect(cart.body.code).toBe(20001);
	// The order actor on "core" may still be starting (its queues) when the gateway is ready: a
	// 503 until then, so the trace looked for is that of the first answer from the actor.
	let order = await api.get("/api/order/123456789012345678901234", token);
	await eventually(async () => (order = await api.get("/api/order/123456789012345678901234", token)).status !== 503);
	expect(order.body.code).toBe(30001);

	await eventually(
		async () => received.some(s => s.traceId === order.body.trace_id && s.name === "action 'order.get'"),
		15000
	);
	const trace = (id: string | null) => received.filter(s => s.traceId === id);

	// The cart request: a root span on the gateway node, its child on the other node.
	// Each node flushes on its own timer: wait for the gateway's root span and the remote child.
	await eventually(async () => {
		const names = trace(cart.body.trace_id).map(s => s.name);
		return names.includes("POST /api/cart") && names.includes("action 'cart.add'");
	}, 10000);
	const spans = trace(cart.body.trace_id);
	const root = spans.find(s => !s.parentSpanId)!;
	expect(root.node).toBe("edge");
	expect(root.name).toBe("POST /api/cart");
	const add = spans.find(s => s.name === "action 'cart.add'")!;
	expect(add.node).toBe("core");
	expect(add.parentSpanId).toBe(root.spanId);
	expect(add.attributes).toMatchObject({ product_id: 4242, user_id: user.id });
	// Every span of the trace hangs off a span of the same trace.
	const ids = new Set(spans.map(s => s.spanId));
	for (const s of spans) if (s.parentSpanId) expect(ids.has(s.parentSpanId)).toBe(true);

	const get = trace(order.body.trace_id).find(s => s.name === "action 'order.get'")!;
	expect(get.attributes).toMatchObject({ order_no: "123456789012345678901234", user_id: user.id });

	// No password ever leaves in a span.
	expect(JSON.stringify(received)).not.toContain("traced-password-1");
}, 90000);
