import { Cachers } from "moleculer";
import type { Redis } from "ioredis";

/**
 * Moleculer's Redis cacher, with one repair for Redis Cluster. Its clean() (run by every product
 * write) scans each master and deletes what one SCAN page found with a single multi-key DEL; on a
 * cluster the keys of one master lie in many slots, so that DEL fails with CROSSSLOT and the
 * write that cleaned answered 500. Here each key is deleted by a command of its own, pipelined
 * to the master that holds it. One Redis keeps Moleculer's own code.
 */
export class ClusterSafeRedisCacher extends Cachers.Redis {
	_nodeScanDel(node: Redis, pattern: string): Promise<void> {
		if (!(this.opts as { cluster?: unknown }).cluster)
			return (Cachers.Redis.prototype as any)._nodeScanDel.call(this, node, pattern);
		return new Promise((resolve, reject) => {
			const stream = node.scanStream({ match: pattern, count: 100 });
			stream.on("data", (keys: string[] = []) => {
				if (!keys.length) return;
				stream.pause();
				node
					.pipeline(keys.map(k => ["del", k]))
					.exec()
					.then(results => {
						const failed = results?.find(([err]) => err);
						if (failed) throw failed[0];
						stream.resume();
					})
					.catch(err => {
						stream.destroy();
						reject(Object.assign(err, { pattern }));
					});
			});
			stream.on("error", reject);
			stream.on("end", () => resolve());
		});
	}
}
