import net from "node:net";

/**
 * A TCP forwarder the test can cut: `down()` closes every open connection and stops
 * listening (clients get ECONNRESET, then ECONNREFUSED), `up()` listens again on the same
 * port. Pointing one actor's database at it makes a real outage of that actor's database.
 */
export class TcpProxy {
	private server: net.Server | null = null;
	private readonly sockets = new Set<net.Socket>();
	private stalled = false;
	port = 0;

	constructor(
		private readonly targetHost: string,
		private readonly targetPort: number
	) {}

	async up(): Promise<void> {
		const server = net.createServer(client => {
			if (this.stalled) {
				// Accepted and never answered: the client waits until its own timeout.
				this.sockets.add(client);
				client.on("close", () => this.sockets.delete(client));
				client.on("error", () => undefined);
				return;
			}
			const upstream = net.connect(this.targetPort, this.targetHost);
			for (const s of [client, upstream]) {
				this.sockets.add(s);
				s.on("close", () => this.sockets.delete(s));
				s.on("error", () => undefined);
			}
			client.pipe(upstream).pipe(client);
			client.on("close", () => upstream.destroy());
			upstream.on("close", () => client.destroy());
		});
		await new Promise<void>((resolve, reject) => {
			server.once("error", reject);
			server.listen(this.port, "127.0.0.1", () => resolve());
		});
		this.port = (server.address() as net.AddressInfo).port;
		this.server = server;
	}

	/**
	 * A database that hangs instead of refusing: open connections are cut, new ones are
	 * accepted and never answered. `resume()` forwards again.
	 */
	stall(): void {
		this.stalled = true;
		for (const s of this.sockets) s.destroy();
	}

	resume(): void {
		this.stalled = false;
		for (const s of this.sockets) s.destroy();
	}

	async down(): Promise<void> {
		const server = this.server;
		this.server = null;
		for (const s of this.sockets) s.destroy();
		if (server) await new Promise<void>(resolve => server.close(() => resolve()));
	}
}
