import { isIPv6 } from "node:net";
import { LRUCache } from "lru-cache";
import type { RateTier } from "../../config";
import { isCluster, RedisClient } from "../storage/redis";
import { TickBatcher } from "../storage/tick-batch";

export interface Verdict {
	allowed: boolean;
	/** When refused: milliseconds until a request would be allowed. */
	retryAfterMs: number;
}

const ALLOWED: Verdict = Object.freeze({ allowed: true, retryAfterMs: 0 });

interface Bucket {
	tokens: number;
	last: number;
}

/**
 * Token buckets per key (client IP) in this process. The map is bounded: past `maxKeys` the
 * least recently used key is evicted first, so a flood of new addresses cannot grow memory
 * and cannot evict an active client at random (failure mode 7).
 */
export class LocalBuckets {
	private readonly buckets: LRUCache<string, Bucket>;

	constructor(maxKeys: number) {
		this.buckets = new LRUCache({ max: maxKeys });
	}

	take(key: string, tier: RateTier, now = performance.now()): Verdict {
		let b = this.buckets.get(key);
		if (!b) {
			b = { tokens: tier.burst, last: now };
			this.buckets.set(key, b);
		} else {
			b.tokens = Math.min(tier.burst, b.tokens + ((now - b.last) * tier.rate) / 1000);
			b.last = now;
		}
		if (b.tokens >= 1) {
			b.tokens -= 1;
			return ALLOWED;
		}
		return { allowed: false, retryAfterMs: Math.ceil(((1 - b.tokens) * 1000) / tier.rate) };
	}

	get size(): number {
		return this.buckets.size;
	}

	/** Forgets every key (a test starting a scenario afresh). */
	clear(): void {
		this.buckets.clear();
	}
}

export type GcraRedis = RedisClient & {
	/** lua/ratelimit_gcra.lua: the key count, the keys, then each key's interval, burst and checks */
	rateLimitGcra(numberOfKeys: number, ...keysThenArgs: (string | number)[]): Promise<number[]>;
};

export interface DistributedCheck {
	key: string;
	tier: RateTier;
}

/** The most checks one script call decides. */
const MAX_CHECKS = 300;

/**
 * The shared layer: GCRA in Redis (lua/ratelimit_gcra.lua), one key per tier. All gateway
 * nodes share the budget. Every check of every request of a tick goes in one script call
 * (TickBatcher), where a call per check was three commands per live request: the client's
 * CPU per command and per argument, not Redis', is what a sale's opening pays. On a Redis
 * Cluster only checks of one key go together: the tiers' keys live in different slots (one
 * hot global key must not pull every user's key onto its node), and the hot global key is
 * the one worth batching.
 */
export class SharedLimiter {
	private readonly batcher: TickBatcher<DistributedCheck, Verdict>;
	private readonly groupOf: (key: string) => string;

	constructor(readonly redis: GcraRedis) {
		this.groupOf = isCluster(redis) ? key => key : () => "";
		this.batcher = new TickBatcher(MAX_CHECKS, async (_group, checks) => {
			// Each key once, with its checks' count: a tick of one sale's buyers checks the global
			// key (and, behind one proxy, one address's) once per request.
			const byKey = [...Map.groupBy(checks.keys(), i => checks[i].key).values()];
			const flat = await redis.rateLimitGcra(
				byKey.length,
				...byKey.map(idx => checks[idx[0]].key),
				...byKey.flatMap(idx => {
					const { tier } = checks[idx[0]];
					return [1000 / tier.rate, tier.burst, idx.length];
				})
			);
			if (flat.length !== 2 * byKey.length) throw new Error(`${flat.length} values for ${byKey.length} keys`);
			const verdicts: Verdict[] = new Array(checks.length);
			byKey.forEach((idx, k) => {
				const [allowed, retryAfterMs] = [flat[2 * k], flat[2 * k + 1]];
				const refused: Verdict = { allowed: false, retryAfterMs };
				idx.forEach((i, nth) => (verdicts[i] = nth < allowed ? ALLOWED : refused));
			});
			return verdicts;
		});
	}

	/** Each check takes its tier's token; refused if any is refused, after the longest wait. */
	async check(checks: DistributedCheck[]): Promise<Verdict> {
		const verdicts = await Promise.all(checks.map(c => this.batcher.add(this.groupOf(c.key), c)));
		const retry = Math.max(0, ...verdicts.map(v => v.retryAfterMs));
		return verdicts.every(v => v.allowed) ? ALLOWED : { allowed: false, retryAfterMs: retry };
	}
}

/**
 * The client's address: the socket's, unless the socket is a trusted proxy; then the
 * right-most X-Forwarded-For entry that is not itself a trusted proxy. A client cannot move
 * its budget by sending X-Forwarded-For itself.
 */
export function clientIp(
	socketAddress: string | undefined,
	forwardedFor: string | string[] | undefined,
	trusted: ReadonlySet<string>
): string {
	const socket = normalizeIp(socketAddress ?? "");
	if (!trusted.has(socket) || !forwardedFor) return socket;
	const hops = (Array.isArray(forwardedFor) ? forwardedFor.join(",") : forwardedFor)
		.split(",")
		.map(s => normalizeIp(s.trim()))
		.filter(Boolean);
	for (let i = hops.length - 1; i >= 0; i--) if (!trusted.has(hops[i])) return hops[i];
	return socket;
}

function normalizeIp(ip: string): string {
	return ip.startsWith("::ffff:") ? ip.slice(7) : ip;
}

/**
 * The key a client's budget is kept under, in this node's buckets and in Redis. An IPv4
 * address is its own key; so is an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, in any of its
 * spellings), which is an IPv4 client. Any other IPv6 address is keyed by its /64: one
 * subscriber or host is usually given a whole /64, so per address it would have 2^64 budgets.
 * Anything else (not an address) is kept as it is.
 */
export function rateKey(ip: string): string {
	// Most clients are IPv4: a colon is the cheap test, before net.isIPv6's large regex.
	if (!ip.includes(":")) return ip;
	const groups = ipv6Groups(ip);
	if (!groups) return ip;
	if (groups.slice(0, 5).every(g => g === 0) && groups[5] === 0xffff)
		return `${groups[6] >> 8}.${groups[6] & 255}.${groups[7] >> 8}.${groups[7] & 255}`;
	return `${groups
		.slice(0, 4)
		.map(g => g.toString(16))
		.join(":")}::/64`;
}

/** The eight 16-bit groups of an IPv6 address (zone id dropped), or null when it is none. */
function ipv6Groups(address: string): number[] | null {
	const zone = address.indexOf("%");
	const ip = zone >= 0 ? address.slice(0, zone) : address;
	if (!isIPv6(ip)) return null;
	let head = ip;
	const tail: number[] = [];
	if (ip.includes(".")) {
		// A dotted IPv4 in the last 32 bits.
		const cut = ip.lastIndexOf(":");
		const [a, b, c, d] = ip
			.slice(cut + 1)
			.split(".")
			.map(Number);
		tail.push((a << 8) | b, (c << 8) | d);
		head = ip.slice(0, ip.endsWith("::" + ip.slice(cut + 1)) ? cut + 1 : cut);
	}
	const [left, right] = head.split("::");
	const hex = (part: string | undefined) => (part ? part.split(":").map(h => parseInt(h, 16)) : []);
	const l = hex(left);
	const r = hex(right);
	const zeros = right === undefined ? 0 : 8 - l.length - r.length - tail.length;
	return [...l, ...new Array<number>(zeros).fill(0), ...r, ...tail];
}
