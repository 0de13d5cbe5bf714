import type { Channel } from "amqplib";
import type { Config } from "../../config";
import { amqpName, ConsumerOptions } from "./amqp";

/** How a work queue's failing messages are retried (config `seckill.max_deliveries`, `amqp.retry_delays_ms`). */
export interface DeliveryPolicy {
	/** tries before a message is dead-lettered; also the work queue's x-delivery-limit */
	maxDeliveries: number;
	/** the retry ladder's delays */
	retryDelaysMs: readonly number[];
}

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
		seckillDlq: amqpName(namespace, "seckill.orders.dlq"),
		/** A rung of a work queue's retry ladder: a fixed-TTL queue dead-lettering back into it. */
		retryQueue: (queue: string, ms: number) => `${queue}.retry.${ms}ms`
	};
}

export function deliveryPolicy(c: Config): DeliveryPolicy {
	return { maxDeliveries: c.seckill.max_deliveries, retryDelaysMs: c.amqp.retry_delays_ms };
}

/** Where a consumer of `queue` parks the messages that fail (see QueueConsumer). */
export function parking(
	namespace: string,
	queue: string,
	routingKey: string,
	policy: DeliveryPolicy
): Pick<ConsumerOptions, "maxAttempts" | "retryQueues" | "deadLetter"> {
	const n = names(namespace);
	return {
		maxAttempts: policy.maxDeliveries,
		retryQueues: policy.retryDelaysMs.map(ms => n.retryQueue(queue, ms)),
		deadLetter: { exchange: n.deadLetterExchange, routingKey }
	};
}

export const CLOSE_ROUTING_KEY = "close";
export const SECKILL_ROUTING_KEY = "seckill";

async function workQueue(
	ch: Channel,
	namespace: string,
	queue: string,
	dlq: string,
	routingKey: string,
	policy: DeliveryPolicy
): Promise<void> {
	const n = names(namespace);
	await ch.assertExchange(n.orderExchange, "direct", { durable: true });
	await ch.assertExchange(n.deadLetterExchange, "direct", { durable: true });
	await ch.assertQueue(dlq, { durable: true });
	await ch.bindQueue(dlq, n.deadLetterExchange, routingKey);
	await ch.assertQueue(queue, {
		durable: true,
		arguments: {
			"x-queue-type": "quorum",
			// The consumer counts attempts itself and parks failures; this limit only bounds the
			// path where a message could not be parked (the channel broke while handling it).
			"x-delivery-limit": policy.maxDeliveries,
			"x-dead-letter-exchange": n.deadLetterExchange,
			"x-dead-letter-routing-key": routingKey
		}
	});
	await ch.bindQueue(queue, n.orderExchange, routingKey);
	for (const ms of policy.retryDelaysMs) {
		await ch.assertQueue(n.retryQueue(queue, ms), {
			durable: true,
			arguments: {
				"x-queue-type": "quorum",
				"x-message-ttl": ms,
				"x-dead-letter-exchange": n.orderExchange,
				"x-dead-letter-routing-key": routingKey,
				// A message waiting for its retry is a reservation: it must not be lost on the way
				// back, so dead-lettering is confirmed (which needs reject-publish overflow).
				"x-dead-letter-strategy": "at-least-once",
				"x-overflow": "reject-publish"
			}
		});
	}
}

/** The close queue and its delay queue: an expired delay message dead-letters into `close`. */
export async function assertCloseTopology(
	ch: Channel,
	namespace: string,
	payTimeoutMs: number,
	policy: DeliveryPolicy
): Promise<string> {
	const n = names(namespace);
	await workQueue(ch, namespace, n.closeQueue, n.closeDlq, CLOSE_ROUTING_KEY, policy);
	return assertDelayQueue(ch, namespace, payTimeoutMs);
}

export async function assertDelayQueue(ch: Channel, namespace: string, payTimeoutMs: number): Promise<string> {
	const n = names(namespace);
	const delay = n.payTimeoutQueue(payTimeoutMs);
	await ch.assertQueue(delay, {
		durable: true,
		arguments: {
			"x-message-ttl": payTimeoutMs,
			"x-dead-letter-exchange": n.orderExchange,
			"x-dead-letter-routing-key": CLOSE_ROUTING_KEY
		}
	});
	return delay;
}

export async function assertSeckillTopology(ch: Channel, namespace: string, policy: DeliveryPolicy): Promise<void> {
	const n = names(namespace);
	await workQueue(ch, namespace, n.seckillQueue, n.seckillDlq, SECKILL_ROUTING_KEY, policy);
}
