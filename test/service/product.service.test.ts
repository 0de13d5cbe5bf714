/**
 * The product actor in process, the way moleculer-template-project-typescript tests its
 * services: a ServiceBroker without a transporter, the actor's schema, calls to its actions.
 * Its table is real (a MariaDB database of the test's own); no gateway and no other actor run,
 * so what is checked here is the actor's own contract: its params schemas and its rejections.
 */
import { Errors, ServiceBroker, ServiceSchema } from "moleculer";
import { setConfig } from "../../config";
import { renderError } from "../../lib/contract/envelope";
import { migrate } from "../../lib/storage/migrate";
import { dropDatabase, testConfig } from "../helpers/node";

// A short statement bound, to see it end a statement that runs too long.
const cfg = testConfig({ db: { statement_timeout_ms: 500 } });
const broker = new ServiceBroker({ logger: false, validator: true, nodeID: cfg.node_id });

beforeAll(async () => {
	setConfig(cfg);
	await migrate(cfg.db);
	// Loaded after setConfig: a service schema reads the configuration when its module loads.
	// eslint-disable-next-line @typescript-eslint/no-require-imports
	broker.createService(require("../../services/product.service").default as ServiceSchema);
	await broker.start();
});

afterAll(async () => {
	await broker.stop();
	await dropDatabase(cfg);
});

/** The error an action call ends with (a business code or a validation failure). */
async function failure(action: string, params: Record<string, unknown>): Promise<Errors.MoleculerError> {
	try {
		await broker.call(action, params);
	} catch (err) {
		return err as Errors.MoleculerError;
	}
	throw new Error(`${action} ${JSON.stringify(params)} succeeded`);
}

const product = { name: "Kettle", price: 19.99, stock: 5, category: "home" };

describe("product actor in process", () => {
	it("refuses bad params by its schema, naming each bad field, and writes nothing", async () => {
		const err = await failure("product.create", { ...product, price: 1.999, stock: -1, name: "" });
		expect(err).toBeInstanceOf(Errors.ValidationError);
		const fields = (err.data as { field: string }[]).map(d => d.field).sort();
		expect(fields).toEqual(["name", "price", "stock"]);
		const listed = (await broker.call("product.list", {})) as { total: number };
		expect(listed.total).toBe(0);
	});

	it("answers 20001 for a product that does not exist, for get, update and remove", async () => {
		for (const [action, params] of [
			["product.get", { id: 987654 }],
			["product.update", { id: 987654, name: "x" }],
			["product.remove", { id: 987654 }]
		] as const) {
			const err = await failure(action, params);
			const { status, body } = renderError(err, null);
			expect({ action, status, code: body.code }).toEqual({ action, status: 404, code: 20001 });
		}
	});

	it("stores the price exactly and lists only products on the shelf", async () => {
		const created = (await broker.call("product.create", product)) as { id: number; price: number };
		expect(created.price).toBe(19.99);
		await broker.call("product.create", { ...product, name: "Hidden", status: 0 });
		const listed = (await broker.call("product.list", { page_size: 100 })) as { list: { id: number }[]; total: number };
		expect(listed.list.map(p => p.id)).toEqual([created.id]);
		expect(listed.total).toBe(1);
	});

	it("ends a statement that runs past db.statement_timeout_ms, and the connection serves the next", async () => {
		const db = (broker.getLocalService("product") as unknown as { adapter: { db: import("sequelize").Sequelize } })
			.adapter.db;
		const started = Date.now();
		await expect(db.query("SELECT SLEEP(5)")).rejects.toThrow(/max_statement_time|interrupted/i);
		expect(Date.now() - started).toBeLessThan(4000);
		const [rows] = await db.query("SELECT 1 AS one");
		expect(rows).toEqual([{ one: 1 }]);
	});
});
