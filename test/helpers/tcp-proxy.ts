import net from "node:net";

/**
 * A TCP forwarder the test can cut: `down()` closes every open connection and stops
 * listening (clients get ECONNRESET, then ECONNREFUSED), `up()` listens again on the same
 * port. Pointing one actor's database at it makes a real outage of that actor's database.
 */
export class TcpProxy {
	private server: net.Server | null = null;
	private readonly sockets = new Set<net.Socket>();
	port = 0;

	constructor(private readonly targetHost: string, private readonly targetPort: number) {}

	async up(): Promise<void> {
		const server = net.createServer(client => {
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

	async down(): Promise<void> {
		const server = this.server;
		this.server = null;
		for (const s of this.sockets) s.destroy();
		if (server) await new Promise<void>(resolve => server.close(() => resolve()));
	}
}
