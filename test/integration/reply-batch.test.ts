import http from "node:http";
import net from "node:net";
import { ReplyBatch } from "../../lib/http/reply-batch";

function post(port: number, body: string): Promise<{ status: number; body: string }> {
	return new Promise((resolve, reject) => {
		const req = http.request({ host: "127.0.0.1", port, path: "/", method: "POST", agent: false }, res => {
			let text = "";
			res.on("data", d => (text += d));
			res.on("end", () => resolve({ status: res.statusCode!, body: text }));
		});
		req.on("error", reject);
		req.end(body);
	});
}

describe("lib/reply-batch: answers ended together per loop turn", () => {
	let server: http.Server;
	const listen = async (handler: http.RequestListener) => {
		server = http.createServer(handler);
		await new Promise<void>(resolve => server.listen(0, "127.0.0.1", () => resolve()));
		return (server.address() as net.AddressInfo).port;
	};
	afterEach(() => new Promise<void>(resolve => (server.listening ? server.close(() => resolve()) : resolve())));

	it("ends each answer after the turn it was made in, each with its own body", async () => {
		const batch = new ReplyBatch();
		const endedAtOnce: boolean[] = [];
		const endedAfterTurn: boolean[] = [];
		const port = await listen((req, res) => {
			let text = "";
			req.on("data", d => (text += d));
			req.on("end", () => {
				res.writeHead(200, { "Content-Type": "text/plain" });
				batch.end(res, `answer to ${text}`);
				endedAtOnce.push(res.writableEnded);
				setImmediate(() => endedAfterTurn.push(res.writableEnded));
			});
		});
		const answers = await Promise.all(Array.from({ length: 100 }, (_, i) => post(port, String(i))));
		expect(answers.map(a => a.body)).toEqual(Array.from({ length: 100 }, (_, i) => `answer to ${i}`));
		expect(answers.every(a => a.status === 200)).toBe(true);
		expect(endedAtOnce.filter(Boolean)).toHaveLength(0);
		expect(endedAfterTurn.filter(Boolean)).toHaveLength(100);
	});

	it("still answers the others of a turn when one client has gone away", async () => {
		const batch = new ReplyBatch();
		const waiting: { body: string; res: http.ServerResponse }[] = [];
		const port = await listen((req, res) => {
			let text = "";
			req.on("data", d => (text += d));
			req.on("end", () => {
				waiting.push({ body: text, res });
				if (waiting.length < 3) return;
				// All three in one turn, the middle one's connection already gone.
				waiting[1].res.socket!.destroy();
				for (const w of waiting) {
					w.res.writeHead(200);
					batch.end(w.res, `answer to ${w.body}`);
				}
			});
		});
		const sent = ["a", "b", "c"];
		const answers = await Promise.allSettled(sent.map(b => post(port, b)));
		const answered = answers.flatMap((a, i) =>
			a.status === "fulfilled" ? [[a.value.body, `answer to ${sent[i]}`]] : []
		);
		expect(answered).toHaveLength(2);
		for (const [got, want] of answered) expect(got).toBe(want);
		expect(waiting[1].res.writableEnded || waiting[1].res.destroyed).toBe(true);
	});
});
