import type { ServiceBroker } from "moleculer";

interface ReplCommand {
	command: string;
	description: string;
	alias?: string[];
	options?: { option: string; description: string }[];
	action: (broker: ServiceBroker, args: Record<string, any>, helpers: any) => Promise<void> | void;
}

/** Project commands for the Moleculer REPL (`--repl`), next to the built-in ones. */
export const replCommands: ReplCommand[] = [
	{
		command: "gomall-health",
		description: "Show this node's view of the database, Redis, RabbitMQ and NATS",
		async action(broker) {
			const nodes = broker.registry.getNodeList({ onlyAvailable: true, withServices: true }) as any[];
			console.log(`nodes: ${nodes.map(n => `${n.id}[${n.services.map((s: any) => s.name).filter((s: string) => !s.startsWith("$")).join(",")}]`).join(" ")}`);
		}
	}
];
