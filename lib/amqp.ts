import amqp, { ChannelModel } from "amqplib";
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

	get isConnected(): boolean {
		return this.conn !== null;
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
