/**
 * Moleculer's circuit breaker, shown on a process cluster: the product actor's database
 * hangs (a TCP proxy that stops answering), the gateway's calls time out, the breaker opens
 * and the next callers get a fast 503 envelope; the database comes back, the breaker
 * half-opens after half_open_time, closes on a success, and requests succeed again.
 */
import { loadConfig } from "../../config";
import { TcpProxy } from "../helpers/tcp-proxy";
import { eventually } from "../helpers/proc";
import { ProcCluster } from "./nodes";

const TIMEOUT_MS = 1500;
let cluster: ProcCluster;
let proxy: TcpProxy;

beforeAll(async () => {
	const db = loadConfig({ env: "test" }).db;
	proxy = new TcpProxy(db.host, db.port);
	await proxy.up();
	cluster = new ProcCluster({
		broker: {
			request_timeout: TIMEOUT_MS,
			circuit_breaker: { enabled: true, threshold: 0.5, min_request_count: 3, window_time: 10, half_open_time: 2000 }
		}
	});
	await cluster.open();
	await cluster.start("gateway", ["api"]);
	await cluster.start("catalogue", ["user", "product"], { GOMALL_DB_PORT: String(proxy.port) });
}, 120000);

afterAll(async () => {
	await cluster?.close();
	await proxy?.down();
}, 60000);

let seq = 0;
/** A product search nobody made before: never answered from the cache. */
async function search() {
	const started = Date.now();
	const r = await cluster.http.get(`/api/product?keyword=k${++seq}`);
	return { status: r.status, code: r.body?.code, ms: Date.now() - started, trace: r.body?.trace_id };
}

/**
 * The gateway's open-breaker gauges by action. Any actor on the stalled database may fail
 * meanwhile (the gateway's revocation sync calls the user actor), so the test reads the
 * product actor's gauge and checks that none belongs to the gateway's own handler.
 */
async function breakerGauges(): Promise<Map<string, string>> {
	const text = await (await fetch(`${cluster.http.baseUrl}/metrics`)).text();
	const gauges = new Map<string, string>();
	for (const line of text.split("\n")) {
		const m = /^moleculer_circuit_breaker_opened_active\{(.*)\} (\S+)$/.exec(line);
		if (m) gauges.set(m[1], m[2]);
	}
	return gauges;
}

async function expectProductBreaker(open: "1" | "0") {
	const gauges = await breakerGauges();
	const product = [...gauges].filter(([labels]) => labels.includes('action="product.list"'));
	expect(product).toEqual([[expect.stringContaining('affected_node_id="catalogue"'), open]]);
	expect([...gauges.keys()].filter(labels => labels.includes('service="api"'))).toEqual([]);
}

it("opens on a hanging actor (fast 503 envelopes instead of timeouts) and closes again once it recovers", async () => {
	expect(await search()).toMatchObject({ status: 200, code: 0 });

	proxy.stall();
	// Calls wait for the request timeout and fail: enough of them in the window open the breaker.
	const slow = await Promise.all([search(), search(), search(), search()]);
	for (const r of slow) expect(r).toMatchObject({ status: 503, code: 503 });
	expect(Math.min(...slow.map(r => r.ms))).toBeGreaterThanOrEqual(TIMEOUT_MS - 100);

	// Open: refused at the gateway without calling the actor, long before any timeout.
	const fast = [];
	for (let i = 0; i < 5; i++) fast.push(await search());
	for (const r of fast) expect(r).toMatchObject({ status: 503, code: 503 });
	expect(Math.max(...fast.map(r => r.ms))).toBeLessThan(TIMEOUT_MS / 3);
	expect(fast[0].trace).toMatch(/^[0-9a-f]{32}$/);
	await expectProductBreaker("1");

	// The database answers again: after half_open_time one call is let through, succeeds, and the breaker closes.
	proxy.resume();
	await eventually(async () => (await search()).status === 200, 20000, 250);
	for (let i = 0; i < 5; i++) expect(await search()).toMatchObject({ status: 200, code: 0 });
	await expectProductBreaker("0");
}, 120000);
