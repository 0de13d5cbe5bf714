import type { ServiceBroker } from "moleculer";
import { callEachNode } from "../lib/messaging/each-node";

interface ReplCommand {
	command: string;
	description: string;
	alias?: string[];
	options?: { option: string; description: string }[];
	action: (broker: ServiceBroker, args: Record<string, any>, helpers: any) => Promise<void> | void;
}

type Row = Record<string, unknown>;

/** How long an operator command waits for one node before showing it as not answering. */
const NODE_CALL_TIMEOUT = 3000;

function cell(v: unknown): string {
	if (v === null || v === undefined) return "-";
	if (typeof v === "boolean") return v ? "yes" : "no";
	if (Array.isArray(v)) return v.length ? v.join(",") : "-";
	if (typeof v === "object") return JSON.stringify(v);
	return String(v);
}

/**
 * A plain-text table: a header, a rule, one line per row, columns padded to their widest
 * cell, numbers right-aligned. Plain ASCII so it reads the same in a terminal, a log file
 * and a test's captured output.
 */
export function formatTable(rows: Row[], columns?: string[]): string {
	const cols = columns ?? [...new Set(rows.flatMap(r => Object.keys(r)))];
	if (!rows.length) return "(none)";
	const cells = rows.map(r => cols.map(c => cell(r[c])));
	const width = cols.map((c, i) => Math.max(c.length, ...cells.map(r => r[i].length)));
	const numeric = cols.map((_, i) => cells.every(r => /^-?\d+(\.\d+)?%?$/.test(r[i]) || r[i] === "-"));
	const line = (vals: string[]) =>
		vals
			.map((v, i) => (numeric[i] ? v.padStart(width[i]) : v.padEnd(width[i])))
			.join("  ")
			.trimEnd();
	return [line(cols), width.map(w => "-".repeat(w)).join("  "), ...cells.map(line)].join("\n");
}

const print = (title: string, rows: Row[], columns?: string[]) =>
	console.log(`${title}\n${formatTable(rows, columns)}\n`);

const n = (v: unknown) => (v === undefined || v === null ? 0 : Number(v));

interface StockNodeState {
	node_id: string;
	sold_out: number[];
	seckill: Record<string, number>;
}

/**
 * Flash-sale answers, one row per node that gives them: each gateway (the sold-out answers its
 * lane gives from its flag, api.node) and each stock node (every other answer, stock.node).
 */
async function seckillRows(broker: ServiceBroker): Promise<Row[]> {
	const [gateways, stocks] = await Promise.all([
		callEachNode<StockNodeState>(broker, "api", "api.node", {}, NODE_CALL_TIMEOUT),
		callEachNode<StockNodeState>(broker, "stock", "stock.node", {}, NODE_CALL_TIMEOUT)
	]);
	const states = [...gateways.map(s => ({ ...s, actor: "api" })), ...stocks.map(s => ({ ...s, actor: "stock" }))];
	return states.map(({ node, actor, result, error }) => {
		const c = result?.seckill ?? {};
		const total = Object.values(c).reduce((a, b) => a + b, 0);
		return {
			node,
			actor,
			served: error ? error : total,
			// Won and queued, confirmed or not (the unconfirmed ones are settled by reconciliation).
			queued: n(c.queued) + n(c.queued_unconfirmed),
			sold_out: n(c.sold_out),
			limit: n(c.limit),
			other: total - n(c.queued) - n(c.queued_unconfirmed) - n(c.sold_out) - n(c.limit),
			sold_out_flags: result?.sold_out ?? []
		};
	});
}

/** Project commands for the Moleculer REPL (`--repl`), next to the built-in ones. */
export const replCommands: ReplCommand[] = [
	{
		command: "gomall-nodes",
		description: "The cluster's nodes: actors, address, CPU, uptime and requests served",
		async action(broker) {
			const nodes = (broker.registry.getNodeList({ onlyAvailable: true, withServices: true }) as any[]).sort((a, b) =>
				String(a.id).localeCompare(String(b.id))
			);
			const rows = await Promise.all(
				nodes.map(async nd => {
					const actors = nd.services
						.map((s: any) => s.name)
						.filter((s: string) => !s.startsWith("$"))
						.sort();
					// Each node's own view: its uptime, and the calls its local actions handled.
					const [health, metrics] = await Promise.all([
						broker
							.call<any, any>("$node.health", {}, { nodeID: nd.id, timeout: NODE_CALL_TIMEOUT, retries: 0 })
							.catch(() => null),
						broker
							.call<any[], any>(
								"$node.metrics",
								{ includes: ["moleculer.request.total"] },
								{ nodeID: nd.id, timeout: NODE_CALL_TIMEOUT, retries: 0 }
							)
							.catch(() => null)
					]);
					const served = metrics
						? metrics
								.flatMap((m: any) => m.values ?? [])
								.filter((v: any) => !String(v.labels?.action ?? "").startsWith("$"))
								.reduce((a: number, v: any) => a + n(v.value), 0)
						: null;
					return {
						node: nd.id + (nd.local ? " (this)" : ""),
						actors,
						address: (nd.ipList ?? [])[0] ?? nd.hostname ?? "-",
						cpu: nd.cpu == null ? "-" : `${Math.round(nd.cpu)}%`,
						uptime: health?.process?.uptime == null ? "-" : `${Math.round(health.process.uptime)}s`,
						requests: served
					};
				})
			);
			print("nodes", rows, ["node", "actors", "address", "cpu", "uptime", "requests"]);
			const stock = await seckillRows(broker);
			if (stock.length)
				print("flash-sale requests served, per node", stock, [
					"node",
					"actor",
					"served",
					"queued",
					"sold_out",
					"limit",
					"other"
				]);
		}
	},
	{
		command: "gomall-status [productId]",
		description: "Per flash-sale activity: stock, reservations, buyers, orders, sold-out flags, the invariant",
		async action(broker, args) {
			const params = args.productId ? { product_id: Number(args.productId) } : {};
			const [activities, stock] = await Promise.all([
				broker.call<any[], any>("stock.status", params),
				seckillRows(broker)
			]);
			const rows = activities.map(a => ({
				activity: a.activity_id,
				product: a.product_id,
				armed: a.armed,
				buckets: a.buckets,
				initial: a.initial,
				redis_left: a.redis_remaining,
				reserved: a.reservations.R,
				published: a.reservations.P,
				claimed: a.reservations.C,
				ordered: a.reservations.O,
				failed: a.reservations.F,
				lent: a.lends,
				buyers: a.buyers,
				orders: a.orders,
				closed: a.closed,
				db_stock: a.db_stock,
				sold_out_on: stock.filter(s => (s.sold_out_flags as number[]).includes(a.product_id)).map(s => s.node),
				invariant: a.consistent ? "holds" : "BROKEN"
			}));
			print(
				"flash-sale activities (initial = redis_left + reserved + published + claimed + ordered + failed + lent = db_stock + orders - closed)",
				rows
			);
		}
	},
	{
		command: "gomall-seckill [productId] [stock] [limit] [buckets]",
		description:
			"Without arguments: flash-sale answers per node (each gateway's own sold-out answers, each stock node's). With product and stock: arm (or re-arm) a sale starting now, for one hour (buckets: split its stock over Redis masters)",
		async action(broker, args) {
			if (args.productId && args.stock) {
				const a = await broker.call<any, any>("stock.init", {
					product_id: Number(args.productId),
					stock: Number(args.stock),
					limit_per_user: args.limit ? Number(args.limit) : undefined,
					buckets: args.buckets ? Number(args.buckets) : undefined
				});
				print("armed", [
					{
						activity: a.id,
						product: a.product_id,
						stock: a.stock,
						limit: a.limit_per_user,
						buckets: a.buckets,
						price: a.seckill_price,
						start: new Date(a.start_time).toISOString(),
						end: new Date(a.end_time).toISOString(),
						arming_id: a.arming_id
					}
				]);
				return;
			}
			print("flash-sale requests served, per node", await seckillRows(broker), [
				"node",
				"actor",
				"served",
				"queued",
				"sold_out",
				"limit",
				"other",
				"sold_out_flags"
			]);
			const list = await broker.call<any[], any>("stock.list", {});
			print(
				"active and upcoming activities",
				list.map(a => ({
					activity: a.id,
					product: a.product_id,
					name: a.product_name,
					stock_left: a.stock,
					price: a.seckill_price,
					start: new Date(a.start_time).toISOString(),
					end: new Date(a.end_time).toISOString()
				}))
			);
		}
	},
	{
		command: "gomall-reconcile [activityId]",
		description: "Compare flash-sale reservations with orders, repair, and print what was found and fixed",
		async action(broker, args) {
			const report = await broker.call<{ activities: any[] }, any>(
				"stock.reconcile",
				args.activityId ? { activity_id: Number(args.activityId) } : {}
			);
			print(
				"reconciliation (republished: unconfirmed reservation sent again; requeued: confirmed one sent again, the queue had lost it; unconfirmed: not confirmed yet, kept; failed: dead-lettered, an operator's decision; marked: order found, reservation marked ordered; orphans: order without reservation)",
				report.activities.map(a => ({
					activity: a.activity_id,
					product: a.product_id,
					initial: a.initial,
					redis_left: a.redis.remaining,
					reservations: a.redis.reservations,
					db_stock: a.db.stock,
					live_orders: a.db.live_orders,
					republished: a.republished.length,
					requeued: a.requeued.length,
					unconfirmed: a.unconfirmed,
					failed: a.failed,
					released_closed: a.released_closed,
					marked: a.marked_ordered,
					rebuilt: a.rebuilt ? "yes" : "no",
					restored: a.restored.length,
					orphans: a.orphan_orders.length,
					invariant: a.consistent ? "holds" : "BROKEN"
				}))
			);
			const fixes = report.activities.flatMap(a => [
				...a.republished.map((o: string) => ({ activity: a.activity_id, order_no: o, action: "republished" })),
				...a.requeued.map((o: string) => ({ activity: a.activity_id, order_no: o, action: "requeued (lost)" })),
				...a.restored.map((o: string) => ({
					activity: a.activity_id,
					order_no: o,
					action: "reservation restored from its order"
				})),
				...a.orphan_orders.map((o: string) => ({
					activity: a.activity_id,
					order_no: o,
					action: "orphan (needs an operator)"
				}))
			]);
			if (fixes.length) print("repairs", fixes);
		}
	},
	{
		command: "gomall-failed <activityId>",
		description:
			"Reservations whose message was dead-lettered, with the reason: replay them with gomall-dlq-replay seckill once the cause is fixed, or give a unit back with gomall-release-failed",
		async action(broker, args) {
			const rows = await broker.call<any[], any>("stock.failed", { activity_id: Number(args.activityId) });
			print(
				"failed reservations",
				rows.map(r => ({
					order_no: r.order_no,
					user: r.user_id,
					bucket: r.bucket,
					reserved_at: new Date(r.reserved_at).toISOString(),
					reason: r.reason
				}))
			);
		}
	},
	{
		command: "gomall-release-failed <armingId> <orderNo> [bucket]",
		description: "Give a failed reservation's unit and its buyer's slot back (once; its buyer's poll stays failed)",
		async action(broker, args) {
			const r = await broker.call<any, any>("stock.releaseFailed", {
				arming_id: String(args.armingId),
				order_no: String(args.orderNo),
				bucket: args.bucket !== undefined ? Number(args.bucket) : undefined
			});
			print("released", [{ order_no: args.orderNo, released: r.released }]);
		}
	},
	{
		command: "gomall-sweep",
		description: "Close every expired unpaid order now",
		async action(broker) {
			const r = await broker.call<any, any>("order.sweep", {});
			print("sweep", [typeof r === "object" && r !== null ? r : { closed: r }]);
		}
	},
	{
		command: "gomall-dlq <queue> [limit]",
		description: "List a dead-letter queue (seckill or close) without removing anything",
		async action(broker, args) {
			const r = await broker.call<any, any>("order.deadLetters", {
				queue: args.queue,
				limit: Number(args.limit ?? 100)
			});
			print(`${r.queue}: ${r.messages.length} message(s)`, dlqRows(r.messages));
		}
	},
	{
		command: "gomall-dlq-replay <queue> [limit]",
		description: "Re-publish a dead-letter queue's messages to their work queue",
		async action(broker, args) {
			const r = await broker.call<any, any>("order.replayDeadLetters", {
				queue: args.queue,
				limit: Number(args.limit ?? 100)
			});
			// Dropped: a flash-sale dead letter whose reservation is no longer failed (released or
			// already replayed by an operator), acknowledged instead of sent a second time.
			const dropped = r.dropped ? `, dropped ${r.dropped} no longer failed` : "";
			print(`${r.queue}: replayed ${r.replayed} message(s)${dropped}`, dlqRows(r.messages));
		}
	}
];

function dlqRows(messages: any[]): Row[] {
	return messages.map(m => ({
		message_id: m.message_id,
		order_no: m.body?.order_no ?? "-",
		user: m.body?.user_id ?? "-",
		reason: m.reason,
		attempts: m.attempts,
		from_queue: m.from_queue
	}));
}
