import http from "node:http";
import net from "node:net";
import { closeListeners, listenShared } from "../../lib/http/listen";
import { listeningSockets } from "../helpers/proc";

function get(port: number): Promise<number> {
	return new Promise((resolve, reject) => {
		http
			.get({ host: "127.0.0.1", port, path: "/", agent: false }, res => {
				res.resume();
				res.on("end", () => resolve(res.statusCode!));
			})
			.on("error", reject);
	});
}

describe("lib/listen: one port through several SO_REUSEPORT sockets", () => {
	const servers: { server: http.Server; extra: net.Server[] }[] = [];
	afterEach(async () => {
		for (const s of servers.splice(0)) await closeListeners(s.server, s.extra);
	});

	async function serve(port: number, sockets: number) {
		const server = http.createServer((_req, res) => res.end("ok"));
		const extra = await listenShared(server, { port, host: "127.0.0.1", sockets, checkFree: true });
		servers.push({ server, extra });
		return { server, extra, port: (server.address() as net.AddressInfo).port };
	}

	it("binds every socket to one port, and the served server answers what each of them accepts", async () => {
		const { extra, port } = await serve(0, 4);
		expect(extra).toHaveLength(3);
		expect(extra.map(s => (s.address() as net.AddressInfo).port)).toEqual([port, port, port]);
		expect(listeningSockets(port)).toBe(4);
		const accepted = extra.map(() => 0);
		extra.forEach((s, i) => s.on("connection", () => accepted[i]++));

		const statuses = await Promise.all(Array.from({ length: 200 }, () => get(port)));
		expect(statuses.every(s => s === 200)).toBe(true);
		// The kernel spreads new connections by their addresses: 200 of them reach several sockets.
		expect(accepted.filter(n => n > 0).length).toBeGreaterThanOrEqual(2);
	});

	it("refuses a port something listens on, even another instance with SO_REUSEPORT", async () => {
		const first = await serve(0, 4);
		await expect(serve(first.port, 4)).rejects.toMatchObject({ code: "EADDRINUSE" });
		const plain = net.createServer();
		await new Promise<void>(resolve => plain.listen(0, "127.0.0.1", () => resolve()));
		try {
			await expect(serve((plain.address() as net.AddressInfo).port, 4)).rejects.toMatchObject({ code: "EADDRINUSE" });
		} finally {
			plain.close();
		}
		expect(listeningSockets(first.port)).toBe(4);
	});

	it("stops accepting on every socket when closed", async () => {
		const { server, extra, port } = await serve(0, 3);
		expect(await get(port)).toBe(200);
		await closeListeners(server, extra);
		servers.pop();
		expect(listeningSockets(port)).toBe(0);
		await expect(get(port)).rejects.toMatchObject({ code: "ECONNREFUSED" });
	});

	it("with one socket listens plainly (no SO_REUSEPORT), so nothing can share the port", async () => {
		const { extra, port } = await serve(0, 1);
		expect(extra).toHaveLength(0);
		const other = net.createServer();
		await expect(
			new Promise((resolve, reject) =>
				other.once("error", reject).listen({ port, host: "127.0.0.1", reusePort: true }, () => resolve(null))
			)
		).rejects.toMatchObject({ code: "EADDRINUSE" });
	});
});
