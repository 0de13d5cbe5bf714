import amqp, { Channel, ChannelModel, ConfirmChannel, ConsumeMessage } from "amqplib";
import type { Logger as LoggerInstance } from "moleculer";

export type SetupFn = (conn: ChannelModel) => Promise<void>;

/**
 * One RabbitMQ connection that comes back by itself. Every function registered with
 * onConnect() runs again after each reconnect, so topology, channels and consumers are
 * re-created whenever the broker or the network drops us (see the failure tests).
 */
export class AmqpConnection {
	private conn: ChannelModel | null = null;
	private stopped = false;
	private connecting: Promise<void> | null = null;
	private readonly setups: SetupFn[] = [];
	private retryTimer: NodeJS.Timeout | null = null;

	constructor(
		private readonly url: string,
		private readonly logger: LoggerInstance,
		private readonly name: string,
		private readonly retryDelayMs = 1000
	) {}

	get connection(): ChannelModel | null {
		return this.conn;
	}

	onConnect(fn: SetupFn): void {
		this.setups.push(fn);
	}

	/** Resolves once connected and every setup has run; retries until then. */
	start(): Promise<void> {
		this.stopped = false;
		if (!this.connecting) this.connecting = this.connectLoop().finally(() => (this.connecting = null));
		return this.connecting;
	}

	private async connectLoop(): Promise<void> {
		for (let attempt = 1; !this.stopped; attempt++) {
			try {
				await this.connectOnce();
				return;
			} catch (err) {
				if (attempt === 1 || attempt % 10 === 0) this.logger.warn(`amqp ${this.name}: connect failed (${(err as Error).message}), retrying`);
				await new Promise(r => (this.retryTimer = setTimeout(r, this.retryDelayMs)));
			}
		}
	}

	private async connectOnce(): Promise<void> {
		const conn = await amqp.connect(this.url, { clientProperties: { connection_name: this.name } });
		conn.on("error", (err: Error) => this.logger.warn(`amqp ${this.name}: connection error: ${err.message}`));
		conn.on("close", () => {
			if (this.conn !== conn) return;
			this.conn = null;
			if (!this.stopped) {
				this.logger.warn(`amqp ${this.name}: connection closed, reconnecting`);
				this.start().catch(() => undefined);
			}
		});
		try {
			for (const fn of this.setups) await fn(conn);
		} catch (err) {
			await conn.close().catch(() => undefined);
			throw err;
		}
		if (this.stopped) {
			// stop() ran while we were connecting: do not leave this connection behind.
			await conn.close().catch(() => undefined);
			return;
		}
		this.conn = conn;
		this.logger.info(`amqp ${this.name}: connected`);
	}

	/** A real round trip: opens and closes a channel. */
	async probe(timeoutMs = 1000): Promise<boolean> {
		const conn = this.conn;
		if (!conn) return false;
		const timeout = new Promise<boolean>(r => setTimeout(() => r(false), timeoutMs).unref());
		const check = conn.createChannel().then(
			ch => ch.close().then(() => true, () => true),
			() => false
		);
		return Promise.race([check, timeout]);
	}

	async stop(): Promise<void> {
		this.stopped = true;
		if (this.retryTimer) clearTimeout(this.retryTimer);
		const conn = this.conn;
		this.conn = null;
		if (conn) await conn.close().catch(() => undefined);
	}
}

/** RabbitMQ names are prefixed with the namespace, so two deployments can share one broker. */
export function amqpName(namespace: string, name: string): string {
	return namespace ? `gomall.${namespace}.${name}` : `gomall.${name}`;
}

export class PublishError extends Error {
	override name = "PublishError";
}

/**
 * Publishes on a confirm channel, persistent and mandatory, and resolves only when the broker
 * has confirmed the message AND routed it to a queue. Anything else (no connection, a nack,
 * a basic.return because no queue took it, a closed channel) rejects: the caller decides
 * what to undo. The Go version's fire-and-forget publish is failure mode 3 of the SPEC.
 */
export class ConfirmPublisher {
	private channel: { ch: ConfirmChannel; pending: Set<(err: Error) => void>; returned: Set<string> } | null = null;

	constructor(amqpConn: AmqpConnection, private readonly setupTopology: (ch: ConfirmChannel) => Promise<void> = async () => undefined) {
		amqpConn.onConnect(async conn => {
			const ch = await conn.createConfirmChannel();
			const state = { ch, pending: new Set<(err: Error) => void>(), returned: new Set<string>() };
			ch.on("return", (msg: ConsumeMessage) => {
				if (msg.properties.messageId) state.returned.add(String(msg.properties.messageId));
			});
			ch.on("close", () => {
				if (this.channel === state) this.channel = null;
				// Whatever was not confirmed yet may or may not have reached a queue: the callers
				// treat it as not sent (and their consumers tolerate it having been sent).
				for (const fail of state.pending) fail(new PublishError("channel closed before the broker confirmed"));
				state.pending.clear();
			});
			ch.on("error", () => undefined);
			await this.setupTopology(ch);
			this.channel = state;
		});
	}

	/** The channel, for topology changes at run time (e.g. a new delay queue after SIGHUP). */
	get current(): ConfirmChannel | null {
		return this.channel?.ch ?? null;
	}

	publish(exchange: string, routingKey: string, body: unknown, messageId: string, headers?: Record<string, unknown>): Promise<void> {
		const state = this.channel;
		if (!state) return Promise.reject(new PublishError("no RabbitMQ channel"));
		return new Promise<void>((resolve, reject) => {
			let settled = false;
			const settle = (err?: Error) => {
				if (settled) return;
				settled = true;
				state.pending.delete(settle);
				if (err) reject(err);
				else resolve();
			};
			state.pending.add(settle);
			try {
				state.ch.publish(exchange, routingKey, Buffer.from(JSON.stringify(body)), { persistent: true, mandatory: true, messageId, contentType: "application/json", headers }, err => {
					// basic.return arrives before the confirm of the same message.
					const wasReturned = state.returned.delete(messageId);
					if (err) settle(new PublishError("broker refused the message"));
					else if (wasReturned) settle(new PublishError("no queue is bound for the message"));
					else settle();
				});
			} catch (err) {
				settle(new PublishError((err as Error).message));
			}
		});
	}
}

export interface ConsumerOptions {
	prefetch: number;
	/** Wait before handing a failed message back, so a passing outage is not burnt through. */
	retryDelayMs?: number;
}

/**
 * A manual-ack consumer: ack after the handler succeeded; on failure nack with requeue after
 * a short pause. Queues are quorum queues with x-delivery-limit, so RabbitMQ itself counts
 * the deliveries and dead-letters a message that keeps failing: no poison message loops
 * forever (failure mode 4), and no message is dropped. It consumes again after a reconnect.
 */
export class QueueConsumer {
	private current: { ch: Channel; tag: string } | null = null;
	private readonly inflight = new Set<Promise<void>>();
	private stopped = false;

	constructor(
		amqpConn: AmqpConnection,
		private readonly queue: string,
		private readonly opts: ConsumerOptions,
		private readonly handler: (body: any, msg: ConsumeMessage) => Promise<void>,
		private readonly logger: LoggerInstance
	) {
		amqpConn.onConnect(async conn => {
			if (this.stopped) return;
			const ch = await conn.createChannel();
			ch.on("error", () => undefined);
			await ch.prefetch(opts.prefetch);
			const { consumerTag } = await ch.consume(queue, msg => msg && this.deliver(ch, msg));
			this.current = { ch, tag: consumerTag };
		});
	}

	private deliver(ch: Channel, msg: ConsumeMessage): void {
		let body: unknown;
		try {
			body = JSON.parse(msg.content.toString());
		} catch {
			body = undefined;
		}
		const work = this.handler(body, msg).then(
			() => safely(() => ch.ack(msg)),
			(err: Error) => {
				this.logger.warn(`amqp ${this.queue}: message ${msg.properties.messageId ?? "?"} failed (delivery ${deliveryCount(msg) + 1}): ${err.name}: ${err.message}`);
				// Back off before handing it back (200 ms, 400 ms, ... up to 5 s), so a passing outage
				// of a dependency does not use up the delivery limit in a second.
				const delay = Math.min((this.opts.retryDelayMs ?? 200) * 2 ** deliveryCount(msg), 5000);
				return new Promise<void>(r => setTimeout(r, delay)).then(() => safely(() => ch.nack(msg, false, true)));
			}
		);
		this.inflight.add(work);
		work.finally(() => this.inflight.delete(work));
	}

	/** Stops taking messages and waits for those in hand: a stopping node leaves none half-done. */
	async stop(): Promise<void> {
		this.stopped = true;
		const c = this.current;
		this.current = null;
		if (c) await c.ch.cancel(c.tag).catch(() => undefined);
		await Promise.allSettled([...this.inflight]);
	}
}

/** How many times the message was delivered before this delivery (quorum queues count). */
export function deliveryCount(msg: ConsumeMessage): number {
	return Number(msg.properties.headers?.["x-delivery-count"] ?? 0);
}

function safely(fn: () => void): void {
	try {
		fn();
	} catch {
		// The channel is gone; the broker redelivers the message to the next consumer.
	}
}
