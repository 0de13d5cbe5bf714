import type { Channel } from "amqplib";
import { amqpName } from "./amqp";

/**
 * RabbitMQ names and declarations, in one place for publishers and consumers alike. Work
 * queues are quorum queues: durable, replicated, and with x-delivery-limit RabbitMQ counts
 * redeliveries and dead-letters a message that keeps failing into its DLQ.
 */
export function names(namespace: string) {
	return {
		/** direct exchange of the order actor */
		orderExchange: amqpName(namespace, "order"),
		/** where failing messages end up, one DLQ per work queue */
		deadLetterExchange: amqpName(namespace, "dlx"),
		closeQueue: amqpName(namespace, "order.close"),
		closeDlq: amqpName(namespace, "order.close.dlq"),
		/** Fixed-TTL delay queue (one per timeout value, as queue arguments cannot change). */
		payTimeoutQueue: (ms: number) => amqpName(namespace, `order.pay-timeout.${ms}ms`),
		seckillQueue: amqpName(namespace, "seckill.orders"),
		seckillDlq: amqpName(namespace, "seckill.orders.dlq")
	};
}

export const CLOSE_ROUTING_KEY = "close";
export const SECKILL_ROUTING_KEY = "seckill";

async function workQueue(ch: Channel, namespace: string, queue: string, dlq: string, routingKey: string, maxDeliveries: number): Promise<void> {
	const n = names(namespace);
	await ch.assertExchange(n.orderExchange, "direct", { durable: true });
	await ch.assertExchange(n.deadLetterExchange, "direct", { durable: true });
	await ch.assertQueue(dlq, { durable: true });
	await ch.bindQueue(dlq, n.deadLetterExchange, routingKey);
	await ch.assertQueue(queue, {
		durable: true,
		arguments: {
			"x-queue-type": "quorum",
			"x-delivery-limit": maxDeliveries,
			"x-dead-letter-exchange": n.deadLetterExchange,
			"x-dead-letter-routing-key": routingKey
		}
	});
	await ch.bindQueue(queue, n.orderExchange, routingKey);
}

/** The close queue and its delay queue: an expired delay message dead-letters into `close`. */
export async function assertCloseTopology(ch: Channel, namespace: string, payTimeoutMs: number, maxDeliveries: number): Promise<string> {
	const n = names(namespace);
	await workQueue(ch, namespace, n.closeQueue, n.closeDlq, CLOSE_ROUTING_KEY, maxDeliveries);
	return assertDelayQueue(ch, namespace, payTimeoutMs);
}

export async function assertDelayQueue(ch: Channel, namespace: string, payTimeoutMs: number): Promise<string> {
	const n = names(namespace);
	const delay = n.payTimeoutQueue(payTimeoutMs);
	await ch.assertQueue(delay, {
		durable: true,
		arguments: { "x-message-ttl": payTimeoutMs, "x-dead-letter-exchange": n.orderExchange, "x-dead-letter-routing-key": CLOSE_ROUTING_KEY }
	});
	return delay;
}

export async function assertSeckillTopology(ch: Channel, namespace: string, maxDeliveries: number): Promise<void> {
	const n = names(namespace);
	await workQueue(ch, namespace, n.seckillQueue, n.seckillDlq, SECKILL_ROUTING_KEY, maxDeliveries);
}
