import type { ServerResponse } from "node:http";

/**
 * Responses ended together, once the event loop's I/O phase is over.
 *
 * A response written while its reader sleeps wakes the reader, and on a virtual machine that
 * wake-up, sent to another core, costs more than the write: profiled under the flash sale's
 * load (one gateway process, wrk on the other core), each response's `writev` took about
 * 20 µs and a third of the process's busy time, where the same write costs a quarter of that
 * when the reader is already awake. Written one by one as they are made, between requests
 * being read, responses reach a reader that has gone back to sleep every time; ended together,
 * the first one wakes it and the rest find it reading. Redis writes its replies the same way,
 * just before its loop sleeps.
 *
 * A response waits at most for the rest of the loop turn it was made in: `setImmediate` runs
 * right after the turn's I/O callbacks, and when the process is not busy that turn is one
 * request long.
 */
export class ReplyBatch {
	private pending: ServerResponse[] = [];
	private bodies: string[] = [];

	/** Ends `res` with `body` after this turn's I/O callbacks (its status and headers are already set). */
	end(res: ServerResponse, body: string): void {
		if (this.pending.push(res) === 1) setImmediate(this.flush);
		this.bodies.push(body);
	}

	private readonly flush = (): void => {
		const [responses, bodies] = [this.pending, this.bodies];
		this.pending = [];
		this.bodies = [];
		for (let i = 0; i < responses.length; i++) {
			// One answer that cannot be written must not hold back the rest of the turn's.
			try {
				responses[i].end(bodies[i]);
			} catch {
				responses[i].destroy();
			}
		}
	};
}
