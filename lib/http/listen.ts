import net from "node:net";

/**
 * One port served through several listening sockets of one process.
 *
 * A busy Node process accepts one connection per listening socket per event-loop turn (libuv
 * stopped accepting in a loop in 1.45, libuv/libuv#3696), and under load a turn lasts
 * milliseconds. When hundreds of buyers connect in the same second, as they do when a flash
 * sale opens, the last of them wait in the accept queue for hundreds of turns before their
 * first request is even read. With SO_REUSEPORT the kernel spreads incoming connections over
 * all the sockets bound to the port, so `sockets` of them accept up to that many per turn.
 * Every worker process of a node binds sockets of its own the same way, so no primary process
 * hands connections over (Node's cluster module acknowledges each one before the next).
 */
export interface ListenOptions {
	port: number;
	host: string;
	/** listening sockets in this process; 1 = a plain listen (cluster workers share the primary's) */
	sockets: number;
	/**
	 * Fail with EADDRINUSE when anything already listens on the port (port 0: take one nothing
	 * listens on). SO_REUSEPORT would let a second instance of the same user share the port
	 * silently; workers of one node skip it (their supervisor checked before starting them).
	 */
	checkFree: boolean;
}

function listenOnce(server: net.Server, options: net.ListenOptions): Promise<void> {
	return new Promise((resolve, reject) => {
		const failed = (err: Error) => reject(err);
		server.once("error", failed);
		server.listen(options, () => {
			server.off("error", failed);
			resolve();
		});
	});
}

function close(server: net.Server): Promise<void> {
	return new Promise(resolve => (server.listening ? server.close(() => resolve()) : resolve()));
}

/**
 * Binds the port without SO_REUSEPORT and lets it go: throws EADDRINUSE (as `listen` does) when
 * anything listens there. Resolves with the port (for port 0, one the system found free).
 */
export async function assertPortFree(port: number, host: string): Promise<number> {
	const probe = net.createServer();
	await listenOnce(probe, { port, host });
	const bound = (probe.address() as net.AddressInfo).port;
	await close(probe);
	return bound;
}

/**
 * Binds `server` (the one whose requests are served) and `sockets - 1` more sockets whose
 * connections it is handed ('connection' is how node:http takes a connection in). Resolves with
 * the extra sockets; `closeListeners` closes them.
 */
export async function listenShared(server: net.Server, o: ListenOptions): Promise<net.Server[]> {
	const port = o.checkFree ? await assertPortFree(o.port, o.host) : o.port;
	if (o.sockets <= 1) {
		await listenOnce(server, { port, host: o.host });
		return [];
	}
	await listenOnce(server, { port, host: o.host, reusePort: true });
	const extra: net.Server[] = [];
	try {
		for (let i = 1; i < o.sockets; i++) {
			const s = net.createServer(socket => server.emit("connection", socket));
			extra.push(s);
			await listenOnce(s, { port: (server.address() as net.AddressInfo).port, host: o.host, reusePort: true });
			// An accept error after listening (EMFILE) is the served server's to report.
			s.on("error", err => server.emit("error", err));
		}
	} catch (err) {
		await closeListeners(server, extra);
		throw err;
	}
	return extra;
}

/** Stops accepting on every socket of `listenShared`; resolves once the connections they took have ended. */
export async function closeListeners(server: net.Server, extra: net.Server[]): Promise<void> {
	await Promise.all([close(server), ...extra.map(close)]);
}
