import type { ServiceBroker } from "moleculer";

/** The nodes now available that run a service, for calls that must reach each of them by nodeID. */
export function nodesRunning(broker: ServiceBroker, service: string): string[] {
	const nodes = broker.registry.getNodeList({ onlyAvailable: true, withServices: true }) as any[];
	return nodes
		.filter(nd => nd.services.some((s: any) => s.name === service))
		.map(nd => nd.id)
		.sort();
}

export interface NodeAnswer<T> {
	node: string;
	result?: T;
	/** the error's name when the node did not answer */
	error?: string;
}

/** Calls an action on every node running its service, once each, no retries; a node that fails is reported, not thrown. */
export function callEachNode<T>(
	broker: ServiceBroker,
	service: string,
	action: string,
	params: object = {},
	timeout = 3000
): Promise<NodeAnswer<T>[]> {
	return Promise.all(
		nodesRunning(broker, service).map(node =>
			broker.call<T, object>(action, params, { nodeID: node, timeout, retries: 0 }).then(
				result => ({ node, result }),
				err => ({ node, error: (err as Error).name })
			)
		)
	);
}
