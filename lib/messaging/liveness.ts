import type { Channel, ChannelModel } from "amqplib";
import type { AmqpConnection } from "./amqp";

/**
 * Whether RabbitMQ answers on a connection, for health checks: one round trip (a passive
 * declare of `amq.direct`, which every vhost has and which needs no permission) on one channel
 * kept open for the connection's life, opened again only after that channel or the connection
 * closed. Not the connection's state alone: a broker that stopped answering keeps its TCP
 * connection until the heartbeats time out (two missed, at 60 s each by default), and would be
 * reported up meanwhile. Not a channel per check either (AmqpConnection.probe): each costs the
 * broker a channel process and two round trips more, for every caller of /health.
 * One check at a time goes to the broker; a caller that comes while one is outstanding waits
 * for that one, so a broker that does not answer is not sent a queue of them.
 */
export class AmqpLiveness {
	private channel: { conn: ChannelModel; ch: Promise<Channel> } | null = null;
	private pending: Promise<boolean> | null = null;

	constructor(private readonly amqp: AmqpConnection) {}

	/** True when the broker answered within `timeoutMs`; false when not connected, or no answer. */
	check(timeoutMs = 1000): Promise<boolean> {
		if (!this.amqp.connection) return Promise.resolve(false);
		if (!this.pending) this.pending = this.roundTrip().finally(() => (this.pending = null));
		let timer: NodeJS.Timeout | undefined;
		const timeout = new Promise<boolean>(r => (timer = setTimeout(() => r(false), timeoutMs)));
		return Promise.race([this.pending, timeout]).finally(() => clearTimeout(timer));
	}

	private async roundTrip(): Promise<boolean> {
		const conn = this.amqp.connection;
		if (!conn) return false;
		try {
			const ch = await this.channelOn(conn);
			await ch.checkExchange("amq.direct");
			return true;
		} catch {
			return false;
		}
	}

	private channelOn(conn: ChannelModel): Promise<Channel> {
		if (this.channel?.conn === conn) return this.channel.ch;
		const state = {
			conn,
			ch: conn.createChannel().then(ch => {
				ch.on("error", () => undefined);
				ch.on("close", () => {
					if (this.channel === state) this.channel = null;
				});
				return ch;
			})
		};
		state.ch.catch(() => {
			if (this.channel === state) this.channel = null;
		});
		this.channel = state;
		return state.ch;
	}

	/** Closes the channel (the connection's own close would too). */
	async stop(): Promise<void> {
		const state = this.channel;
		this.channel = null;
		if (state) await state.ch.then(ch => ch.close()).catch(() => undefined);
	}
}
