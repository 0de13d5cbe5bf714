/**
 * deploy/: the Prometheus file passes promtool, both Compose files pass docker-compose
 * config, Grafana is provisioned in both, and every query of the dashboard is valid PromQL
 * over metrics a running node really exports.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { PROJECT_ROOT } from "../../config/paths";
import { startMall, TestMall } from "../helpers/node";

const run = promisify(execFile);
const deploy = (...p: string[]) => path.join(PROJECT_ROOT, "deploy", ...p);
const dashboard = JSON.parse(fs.readFileSync(deploy("grafana", "dashboards", "gomall.json"), "utf8"));
const exprs: string[] = dashboard.panels.flatMap((p: any) => (p.targets ?? []).map((t: any) => t.expr));

let mall: TestMall | undefined;
afterAll(async () => {
	await mall?.stop();
});

it("has a Prometheus file promtool accepts", async () => {
	const r = await run("promtool", ["check", "config", deploy("prometheus", "prometheus.yml")]);
	expect(r.stdout).toMatch(/SUCCESS/);
});

it("has Compose files that docker-compose accepts, each provisioning Grafana with the dashboard", async () => {
	const env = {
		...process.env,
		GOMALL_JWT_SECRET: "x".repeat(40),
		GOMALL_ADMIN_PASSWORD: "compose-check",
		GOMALL_PAY_PROVIDER: "direct"
	};
	for (const file of ["docker-compose.yml", "docker-compose.cluster.yml"]) {
		const r = await run("docker-compose", ["-f", deploy(file), "config"], { env });
		expect(r.stdout).toMatch(/grafana\/provisioning:\/etc\/grafana\/provisioning/);
		expect(r.stdout).toMatch(/grafana\/dashboards:\/var\/lib\/grafana\/dashboards/);
	}
	const cluster = (await run("docker-compose", ["-f", deploy("docker-compose.cluster.yml"), "config"], { env })).stdout;
	expect(cluster).toMatch(/GOMALL_METRICS_PORT: '9100'/);
	// The high-availability layer: Redis Cluster, NATS cluster and WAIT on every actor node.
	const ha = (
		await run(
			"docker-compose",
			["-f", deploy("docker-compose.cluster.yml"), "-f", deploy("docker-compose.ha.yml"), "config"],
			{ env }
		)
	).stdout;
	for (const node of ["gateway", "stock", "order"]) {
		const service = new RegExp(`\\n  ${node}:\\n((?:    .*\\n)*)`).exec(ha)?.[1] ?? "";
		expect(service).toMatch(/GOMALL_REDIS_CLUSTER_NODES: (172\.28\.0\.1\d:6379,?){6}/);
		expect(service).toMatch(/GOMALL_NATS_URL: nats:\/\/nats-1:4222,nats:\/\/nats-2:4222,nats:\/\/nats-3:4222/);
		expect(service).toMatch(/GOMALL_REDIS_WAIT_REPLICAS: '1'/);
	}
	expect(ha).toMatch(/redis-cluster-init:/);
});

it("has a dashboard whose every query is valid PromQL (promtool) and covers routes, flash sale, queue drain, breakers and nodes", async () => {
	expect(dashboard.uid).toBe("gomall-ops");
	const rules = {
		groups: [{ name: "dashboard", rules: exprs.map((expr, i) => ({ record: `gomall:dashboard_${i}`, expr })) }]
	};
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gomall-dash-"));
	const file = path.join(dir, "rules.json"); // JSON is YAML
	fs.writeFileSync(file, JSON.stringify(rules));
	try {
		const r = await run("promtool", ["check", "rules", file]);
		expect(r.stdout).toMatch(new RegExp(`SUCCESS: ${exprs.length} rules found`));
	} finally {
		fs.rmSync(dir, { recursive: true, force: true });
	}
	const all = exprs.join("\n");
	for (const m of [
		"gomall_http_requests_total",
		"gomall_http_request_duration_seconds_bucket",
		"gomall_seckill_requests_total",
		"gomall_queue_messages_total",
		"moleculer_circuit_breaker_opened_active",
		"gomall_node_info"
	])
		expect(all).toContain(m);
});

it("queries only metrics a running node exports", async () => {
	mall = await startMall();
	await mall.http.get("/api/product");
	const text = await (await fetch(`${mall.baseUrl}/metrics`)).text();
	const exported = new Set(
		text
			.split("\n")
			.filter(l => l && !l.startsWith("#"))
			.map(l => l.split(/[{ ]/)[0])
	);
	const used = new Set([...exprs.join("\n").matchAll(/\b(gomall_[a-z_]+|moleculer_[a-z_]+)\b/g)].map(m => m[1]));
	// Breaker series appear once a breaker has changed state (shown in ops-breaker.test.ts).
	const missing = [...used].filter(m => !exported.has(m) && !m.startsWith("moleculer_circuit_breaker_"));
	expect(missing).toEqual([]);
	expect(text).toMatch(
		new RegExp(
			`gomall_node_info\\{node_id="${mall.cfg.node_id}",namespace="${mall.cfg.namespace}",services="user,product,cart,stock,order,upload,api"\\} 1`
		)
	);
}, 60000);
