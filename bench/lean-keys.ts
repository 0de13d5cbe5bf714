/** The lean ceiling's two keys for an arming (one slot, as the mall's): bench/ceiling.ts and its refill in bench/seckill.ts. */
export const leanKeys = (arming: string) => ({
	stock: `bench:lean:{${arming}}:stock`,
	buyers: `bench:lean:{${arming}}:buyers`
});
