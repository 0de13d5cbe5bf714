declare module "moleculer-db" {
	import type { ServiceSchema } from "moleculer";
	const DbService: ServiceSchema;
	export default DbService;
}
