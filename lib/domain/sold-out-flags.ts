/** The most products one stock.soldOut call asks about (a gateway holding more asks in parts). */
export const SOLD_OUT_RECHECK_MAX = 1000;

/**
 * The products a node answers "sold out" for without asking Redis (a gateway's lane, a stock
 * actor), set and cleared by the stock actors' broadcasts: seckill.soldout sets a flag,
 * seckill.available (a unit released) and seckill.armed (fresh units) clear it.
 *
 * A flag is only as good as its order against what clears it. A "sold out" decided before a
 * re-arming, and heard after it, would refuse buyers while the new units sit in Redis until
 * the next recheck (every 2 s). So a flag learned from an answer counts only when no clearing
 * came since its call began (the product's epoch), and a broadcast naming an arming other
 * than the one this node last heard armed is dropped.
 */
export class SoldOutFlags extends Set<number> {
	/** per product: bumped by every clearing broadcast */
	private readonly epochs = new Map<number, number>();
	/** per product: the arming its last seckill.armed named */
	private readonly armings = new Map<number, string>();

	/** Taken before a call whose answer may say "sold out" (learn). */
	epoch(productId: number): number {
		return this.epochs.get(productId) ?? 0;
	}

	/** A "sold out" answer to a call begun at `epoch`: stale when the units came back meanwhile. */
	learn(productId: number, epoch: number): void {
		if (this.epoch(productId) === epoch) this.add(productId);
	}

	/** seckill.soldout. A node that never heard the product armed takes any arming's. */
	soldOut(productId: number, armingId?: string): void {
		const armed = this.armings.get(productId);
		if (armingId !== undefined && armed !== undefined && armed !== armingId) return;
		this.add(productId);
	}

	/** seckill.available: a unit is back. */
	available(productId: number): void {
		this.unitsBack(productId);
	}

	/** seckill.armed: the product's sale is (re)armed with this arming's units. */
	armed(productId: number, armingId?: string): void {
		this.unitsBack(productId);
		if (armingId !== undefined) this.armings.set(productId, armingId);
	}

	private unitsBack(productId: number): void {
		this.delete(productId);
		this.epochs.set(productId, this.epoch(productId) + 1);
	}
}

/** seckill.soldout and seckill.armed: the arming is absent from a node of an older version. */
export interface SaleFlagEvent {
	product_id: number;
	activity_id: number;
	arming_id?: string;
}
