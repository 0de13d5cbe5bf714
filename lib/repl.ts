import type { ServiceBroker } from "moleculer";

interface ReplCommand {
	command: string;
	description: string;
	alias?: string[];
	options?: { option: string; description: string }[];
	action: (broker: ServiceBroker, args: Record<string, any>, helpers: any) => Promise<void> | void;
}

const print = (value: unknown) => console.log(JSON.stringify(value, null, 2));

/** Project commands for the Moleculer REPL (`--repl`), next to the built-in ones. */
export const replCommands: ReplCommand[] = [
	{
		command: "gomall-nodes",
		description: "List the cluster's nodes and the GoMall actors each one runs",
		action(broker) {
			const nodes = broker.registry.getNodeList({ onlyAvailable: true, withServices: true }) as any[];
			for (const n of nodes) console.log(`${n.id}: ${n.services.map((s: any) => s.name).filter((s: string) => !s.startsWith("$")).join(", ")}`);
		}
	},
	{
		command: "gomall-seckill <productId> <stock> [limit]",
		description: "Arm (or re-arm) a flash sale for a product, starting now, for one hour",
		async action(broker, args) {
			print(await broker.call("stock.init", { product_id: Number(args.productId), stock: Number(args.stock), limit_per_user: args.limit ? Number(args.limit) : undefined }));
		}
	},
	{
		command: "gomall-reconcile [activityId]",
		description: "Compare flash-sale reservations with orders, repair, and print the report",
		async action(broker, args) {
			print(await broker.call("stock.reconcile", args.activityId ? { activity_id: Number(args.activityId) } : {}));
		}
	},
	{
		command: "gomall-sweep",
		description: "Close every expired unpaid order now",
		async action(broker) {
			print(await broker.call("order.sweep"));
		}
	},
	{
		command: "gomall-dlq <queue> [limit]",
		description: "List a dead-letter queue (seckill or close) without removing anything",
		async action(broker, args) {
			print(await broker.call("order.deadLetters", { queue: args.queue, limit: Number(args.limit ?? 100) }));
		}
	},
	{
		command: "gomall-dlq-replay <queue> [limit]",
		description: "Re-publish a dead-letter queue's messages to their work queue",
		async action(broker, args) {
			print(await broker.call("order.replayDeadLetters", { queue: args.queue, limit: Number(args.limit ?? 100) }));
		}
	}
];
