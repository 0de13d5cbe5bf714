declare module "cluster-key-slot" {
	/** The Redis Cluster slot of a key (its {hash tag} when it has one), as ioredis computes it. */
	function calculateSlot(key: string): number;
	export default calculateSlot;
}
