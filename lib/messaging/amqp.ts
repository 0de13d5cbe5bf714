import amqp, { Channel, ChannelModel, ConfirmChannel, ConsumeMessage, Options } from "amqplib";
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

	get isStopped(): boolean {
		return this.stopped;
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
				if (attempt === 1 || attempt % 10 === 0)
					this.logger.warn(`amqp ${this.name}: connect failed (${(err as Error).message}), retrying`);
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

/**
 * A publish the broker did not confirm. `outcome` says what the caller may conclude:
 * "not_sent" proves no queue holds the message (no channel, a nack, a basic.return), so what
 * it carried may be undone; "unknown" (the channel closed, or no confirm came in time) means
 * it may be in a queue already, so nothing it carried may be undone on that account.
 */
export class PublishError extends Error {
	override name = "PublishError";
	constructor(
		message: string,
		readonly outcome: "not_sent" | "unknown" = "not_sent"
	) {
		super(message);
	}
}

/**
 * Publishes on one confirm channel, persistent and mandatory, and resolves only when the
 * broker has confirmed the message AND routed it to a queue. Anything else (a nack, a
 * basic.return because no queue took it, the channel closing first) rejects: the caller
 * decides what to undo. The Go version's fire-and-forget publish is failure mode 3 of the SPEC.
 */
class ConfirmingChannel {
	private readonly pending = new Set<(err: Error) => void>();
	private readonly returned = new Set<string>();

	constructor(readonly ch: ConfirmChannel) {
		ch.on("return", (msg: ConsumeMessage) => {
			if (msg.properties.messageId) this.returned.add(String(msg.properties.messageId));
		});
		ch.on("close", () => {
			// Whatever was not confirmed yet may or may not have reached a queue: the callers
			// treat it as not sent (and their consumers tolerate it having been sent).
			for (const fail of this.pending) fail(new PublishError("channel closed before the broker confirmed", "unknown"));
			this.pending.clear();
		});
		ch.on("error", () => undefined);
	}

	/** `options.messageId` is required: it is how a basic.return is matched to its publish. */
	publish(
		exchange: string,
		routingKey: string,
		content: Buffer,
		options: Options.Publish & { messageId: string },
		confirmTimeoutMs = 0
	): Promise<void> {
		return new Promise<void>((resolve, reject) => {
			let settled = false;
			let timer: NodeJS.Timeout | null = null;
			const settle = (err?: Error) => {
				if (settled) return;
				settled = true;
				if (timer) clearTimeout(timer);
				this.pending.delete(settle);
				if (err) reject(err);
				else resolve();
			};
			this.pending.add(settle);
			// A broker under a memory or disk alarm blocks publishers while its heartbeats go on:
			// without a bound the confirm is awaited for as long as the alarm lasts.
			if (confirmTimeoutMs > 0)
				timer = setTimeout(
					() => settle(new PublishError(`no confirm within ${confirmTimeoutMs} ms`, "unknown")),
					confirmTimeoutMs
				);
			try {
				this.ch.publish(exchange, routingKey, content, { ...options, persistent: true, mandatory: true }, err => {
					// basic.return arrives before the confirm of the same message.
					const wasReturned = this.returned.delete(options.messageId);
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

/** How long a closed channel waits before it is opened again on a live connection. */
const REOPEN_DELAY_MS = 1000;

/**
 * A confirmed publisher (see ConfirmingChannel) on a channel of its own, opened after each
 * reconnect, and again on a live connection when RabbitMQ closed the channel alone (a channel
 * error such as a publish to a missing exchange ends the channel, not the connection).
 */
export class ConfirmPublisher {
	private channel: ConfirmingChannel | null = null;
	private reopenTimer: NodeJS.Timeout | null = null;

	constructor(
		private readonly amqpConn: AmqpConnection,
		private readonly setupTopology: (ch: ConfirmChannel) => Promise<void> = async () => undefined,
		/** 0: wait for the confirm as long as the channel lives */
		private readonly confirmTimeoutMs = 0
	) {
		amqpConn.onConnect(conn => this.open(conn));
	}

	private async open(conn: ChannelModel): Promise<void> {
		const state = new ConfirmingChannel(await conn.createConfirmChannel());
		state.ch.on("close", () => {
			if (this.channel !== state) return;
			this.channel = null;
			this.scheduleReopen(conn);
		});
		await this.setupTopology(state.ch);
		this.channel = state;
	}

	private scheduleReopen(conn: ChannelModel): void {
		if (this.reopenTimer) return;
		this.reopenTimer = setTimeout(() => {
			this.reopenTimer = null;
			// A closed connection reconnects and opens the channel through onConnect instead.
			if (this.channel || this.amqpConn.isStopped || this.amqpConn.connection !== conn) return;
			this.open(conn).catch(() => this.scheduleReopen(conn));
		}, REOPEN_DELAY_MS);
		this.reopenTimer.unref();
	}

	/** The channel, for topology changes at run time (e.g. a new delay queue after SIGHUP). */
	get current(): ConfirmChannel | null {
		return this.channel?.ch ?? null;
	}

	publish(
		exchange: string,
		routingKey: string,
		body: unknown,
		messageId: string,
		headers?: Record<string, unknown>
	): Promise<void> {
		const state = this.channel;
		if (!state) return Promise.reject(new PublishError("no RabbitMQ channel"));
		return state.publish(
			exchange,
			routingKey,
			Buffer.from(JSON.stringify(body)),
			{ messageId, contentType: "application/json", headers },
			this.confirmTimeoutMs
		);
	}
}

/**
 * A message that can never succeed, however often it is tried: malformed, or meant for a sale
 * that is not this one. It goes to the dead-letter queue at once, with this message as its
 * reason, instead of using up retries.
 */
export class PermanentMessageError extends Error {
	override name = "PermanentMessageError";
}

/** What happened to a consumed message; counted in gomall_queue_messages_total. */
export type MessageOutcome = "acked" | "retried" | "dead_lettered";

export interface ConsumerOptions {
	prefetch: number;
	/** Tries before a failing message goes to the dead-letter queue. */
	maxAttempts: number;
	/**
	 * The retry ladder: fixed-TTL queues that dead-letter back into the work queue. The n-th
	 * retry of a message waits in retryQueues[min(n - 1, last)].
	 */
	retryQueues: readonly string[];
	/** Where a message goes when it is permanent or out of tries. */
	deadLetter: { exchange: string; routingKey: string };
	onOutcome?: (outcome: MessageOutcome) => void;
	/**
	 * Optional: the messages that arrived together are handled together (the order writer
	 * writes them in one transaction), up to maxSize at a time. The batch handler says, per
	 * message, whether it is done, or the PermanentMessageError that parks it as the
	 * single-message handler would; the others, and every message of a batch that throws, go
	 * through the single-message handler, whose failures are parked as above. So a batch is
	 * only a faster way to the same outcome.
	 */
	batch?: {
		maxSize: number;
		/**
		 * Which batch a message joins: messages of one key are handled together, and each key's
		 * batch settles on its own, so a message one batch cannot write (another sale's, say)
		 * never waits for a big batch it has nothing to do with. A message without a key (null:
		 * malformed, say) goes straight to the single-message handler.
		 */
		groupBy: (body: unknown) => string | null;
		handler: (bodies: unknown[]) => Promise<(boolean | PermanentMessageError)[]>;
		/**
		 * While this says so, the messages in hand wait (and those that arrive join them), at most
		 * maxHoldMs from the first: work that must not compete with the process' own (the flash
		 * sale's opening) goes after it, in bigger batches. Stopping the consumer ends the wait.
		 */
		holdWhile?: () => boolean;
		maxHoldMs?: number;
	};
	/**
	 * Runs before a message is moved to the dead-letter queue, with its parsed body and the
	 * reason: whoever waits on the message learns that it ended there. If it throws, the message
	 * is handed back to the queue instead (and comes to this point again).
	 */
	onDeadLetter?: (body: unknown, reason: string) => Promise<void>;
	/** Told each time the consumer starts or stops receiving (a channel closed, a server-side cancel). */
	onConsuming?: (consuming: boolean) => void;
}

interface Delivery {
	channel: ConfirmingChannel;
	msg: ConsumeMessage;
	body: unknown;
}

/** Headers the consumer writes on a message it parks: tries so far, and why it failed. */
export const ATTEMPTS_HEADER = "x-gomall-attempts";
export const REASON_HEADER = "x-gomall-reason";

/** How often held messages (batch.holdWhile) look again whether they may go. */
const HOLD_RECHECK_MS = 5;

/**
 * A manual-ack consumer whose failures never hold a prefetch slot. A failed message is
 * re-published at once (on the same confirm channel, then acked) either to a retry queue,
 * whose TTL hands it back to the work queue later, or, when it is permanent or out of tries,
 * straight to the dead-letter queue with the reason in a header. So a burst of poison
 * messages costs one round trip each and good messages behind them flow on (no head-of-line
 * blocking), a passing outage is waited out by RabbitMQ rather than by a held message, and
 * nothing loops forever (failure mode 4). If the message cannot be parked (the channel
 * broke), it is handed back with a requeue; the work queue's x-delivery-limit bounds that
 * path too. It consumes again after a reconnect, and on the live connection after its channel
 * closed alone (a consumer timeout, an operator closing it) or the server cancelled it.
 */
export class QueueConsumer {
	private current: { ch: Channel; tag: string } | null = null;
	private readonly inflight = new Set<Promise<void>>();
	private stopped = false;
	private pending: Delivery[] = [];
	private flushScheduled = false;
	/** When the messages in hand began to wait (batch.holdWhile), or null. */
	private holdingSince: number | null = null;
	private resubscribeTimer: NodeJS.Timeout | null = null;

	constructor(
		private readonly amqpConn: AmqpConnection,
		readonly queue: string,
		private readonly opts: ConsumerOptions,
		private readonly handler: (body: any, msg: ConsumeMessage) => Promise<void>,
		private readonly logger: LoggerInstance
	) {
		amqpConn.onConnect(conn => this.subscribe(conn));
	}

	/** Whether the broker delivers to this consumer now. */
	get consuming(): boolean {
		return this.current !== null;
	}

	private async subscribe(conn: ChannelModel): Promise<void> {
		if (this.stopped) return;
		const channel = new ConfirmingChannel(await conn.createConfirmChannel());
		const subscription = { ch: channel.ch, tag: "" };
		channel.ch.on("close", () => this.lost(subscription, conn, "its channel closed"));
		await channel.ch.prefetch(this.opts.prefetch);
		const { consumerTag } = await channel.ch.consume(this.queue, msg => {
			if (msg) return this.deliver(channel, msg);
			// A server-side cancel (the queue deleted, a quorum failover): the channel lives on idle.
			this.lost(subscription, conn, "the server cancelled it");
			channel.ch.close().catch(() => undefined);
		});
		subscription.tag = consumerTag;
		if (this.stopped) return void channel.ch.close().catch(() => undefined);
		this.current = subscription;
		this.opts.onConsuming?.(true);
	}

	private lost(subscription: { ch: Channel; tag: string }, conn: ChannelModel, why: string): void {
		if (this.current !== subscription) return;
		this.current = null;
		this.opts.onConsuming?.(false);
		if (this.stopped) return;
		this.logger.warn(`amqp ${this.queue}: not consuming (${why}); subscribing again`);
		this.scheduleResubscribe(conn);
	}

	private scheduleResubscribe(conn: ChannelModel): void {
		if (this.resubscribeTimer) return;
		this.resubscribeTimer = setTimeout(() => {
			this.resubscribeTimer = null;
			// A closed connection subscribes again through onConnect once it is back.
			if (this.current || this.stopped || this.amqpConn.connection !== conn) return;
			this.subscribe(conn).catch(err => {
				this.logger.warn(`amqp ${this.queue}: subscribing failed (${(err as Error).message}); retrying`);
				this.scheduleResubscribe(conn);
			});
		}, REOPEN_DELAY_MS);
		this.resubscribeTimer.unref();
	}

	private deliver(channel: ConfirmingChannel, msg: ConsumeMessage): void {
		let body: unknown;
		try {
			body = JSON.parse(msg.content.toString());
		} catch {
			body = undefined;
		}
		const delivery = { channel, msg, body };
		if (!this.opts.batch) return this.track(this.handleOne(delivery));
		// What arrives in the same turn of the event loop (one socket read) becomes one batch:
		// no timer, so a lone message waits for nothing.
		this.pending.push(delivery);
		if (!this.flushScheduled) {
			this.flushScheduled = true;
			setImmediate(() => this.flush());
		}
	}

	private flush(): void {
		const { holdWhile, maxHoldMs = 0 } = this.opts.batch ?? {};
		if (holdWhile && !this.stopped && this.pending.length) {
			const now = performance.now();
			this.holdingSince ??= now;
			if (now - this.holdingSince < maxHoldMs && holdWhile()) {
				setTimeout(() => this.flush(), HOLD_RECHECK_MS);
				return;
			}
		}
		this.holdingSince = null;
		this.flushScheduled = false;
		// stop() flushes every consumer: one without batches never holds anything here.
		if (!this.opts.batch || !this.pending.length) return;
		const { groupBy, maxSize } = this.opts.batch;
		const groups = new Map<string, Delivery[]>();
		for (const d of this.pending.splice(0)) {
			const key = groupBy(d.body);
			if (key === null) this.track(this.handleOne(d));
			else if (groups.has(key)) groups.get(key)!.push(d);
			else groups.set(key, [d]);
		}
		for (const group of groups.values())
			for (let i = 0; i < group.length; i += maxSize) this.track(this.handleBatch(group.slice(i, i + maxSize)));
	}

	private track(work: Promise<void>): void {
		this.inflight.add(work);
		work.finally(() => this.inflight.delete(work));
	}

	private async handleBatch(items: Delivery[]): Promise<void> {
		let done: (boolean | PermanentMessageError)[] = [];
		try {
			done = await this.opts.batch!.handler(items.map(d => d.body));
		} catch (err) {
			this.logger.debug(
				`amqp ${this.queue}: batch of ${items.length} failed (${(err as Error).message}); handling its messages one by one`
			);
		}
		await Promise.all(
			items.map((d, i) => {
				const outcome = done[i];
				if (outcome instanceof PermanentMessageError) return this.park(d, outcome);
				return outcome ? this.ack(d) : this.handleOne(d);
			})
		);
	}

	private handleOne(d: Delivery): Promise<void> {
		return this.handler(d.body, d.msg).then(
			() => this.ack(d),
			(err: Error) => this.park(d, err)
		);
	}

	private ack(d: Delivery): void {
		safely(() => d.channel.ch.ack(d.msg));
		this.opts.onOutcome?.("acked");
	}

	private async park({ channel, msg, body }: Delivery, err: Error): Promise<void> {
		const attempts = Number(msg.properties.headers?.[ATTEMPTS_HEADER] ?? 0) + 1;
		const permanent = err instanceof PermanentMessageError;
		const toDlq = permanent || attempts >= this.opts.maxAttempts;
		// Our own texts for permanent failures; for others the error's class and message
		// (driver messages name the failure, never the statement or a credential).
		const reason = (permanent ? err.message : `${toDlq ? "retries exhausted: " : ""}${err.name}: ${err.message}`).slice(
			0,
			300
		);
		const id = msg.properties.messageId ?? "?";
		const options = {
			messageId: String(msg.properties.messageId ?? `${this.queue}-${Date.now()}-${Math.random()}`),
			contentType: msg.properties.contentType,
			headers: { ...ownHeaders(msg.properties.headers), [ATTEMPTS_HEADER]: attempts, [REASON_HEADER]: reason }
		};
		const retryQueue = this.opts.retryQueues[Math.min(attempts - 1, this.opts.retryQueues.length - 1)];
		try {
			if (toDlq || !retryQueue) {
				await this.opts.onDeadLetter?.(body, reason);
				await channel.publish(this.opts.deadLetter.exchange, this.opts.deadLetter.routingKey, msg.content, options);
				this.logger.warn(`amqp ${this.queue}: message ${id} dead-lettered after ${attempts} attempt(s): ${reason}`);
				this.opts.onOutcome?.("dead_lettered");
			} else {
				await channel.publish("", retryQueue, msg.content, options);
				this.logger.warn(
					`amqp ${this.queue}: message ${id} failed (attempt ${attempts}), retried through ${retryQueue}: ${reason}`
				);
				this.opts.onOutcome?.("retried");
			}
			safely(() => channel.ch.ack(msg));
		} catch (publishErr) {
			this.logger.warn(
				`amqp ${this.queue}: message ${id} could not be parked (${(publishErr as Error).message}); handed back to the queue`
			);
			safely(() => channel.ch.nack(msg, false, true));
		}
	}

	/** Stops taking messages and waits for those in hand: a stopping node leaves none half-done. */
	async stop(): Promise<void> {
		this.stopped = true;
		if (this.resubscribeTimer) clearTimeout(this.resubscribeTimer);
		const c = this.current;
		this.current = null;
		if (c) await c.ch.cancel(c.tag).catch(() => undefined);
		this.flush();
		await Promise.allSettled([...this.inflight]);
	}
}

/**
 * The headers a parked message keeps: RabbitMQ's own bookkeeping (the dead-letter history,
 * which grows with every trip through a retry queue, and the delivery count of the old copy)
 * means nothing on the new copy, where attempts are counted in ATTEMPTS_HEADER.
 */
function ownHeaders(headers: Record<string, unknown> | undefined): Record<string, unknown> {
	const out: Record<string, unknown> = {};
	for (const [k, v] of Object.entries(headers ?? {}))
		if (!/^x-(death|first-death-|last-death-|delivery-count)/.test(k)) out[k] = v;
	return out;
}

function safely(fn: () => void): void {
	try {
		fn();
	} catch {
		// The channel is gone; the broker redelivers the message to the next consumer.
	}
}
