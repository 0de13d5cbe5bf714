import { QueryTypes } from "sequelize";
import { bizError } from "../../lib/contract/errors";
import { AuthUser, ROLE_ADMIN } from "../../lib/auth/jwt";
import { paged } from "../../lib/contract/paging";
import { OrderRow } from "../../lib/domain/order";
import type { OrderMethods, OrderThis } from "./types";

/** A buyer's orders: a page of them, or one by its number. */
export const readingMethods = {
	async listOrders(this: OrderThis, userId: number, page: number, page_size: number, status?: number) {
		const filter = status === undefined ? "" : " AND status = :status";
		const repl = { user: userId, status, limit: page_size, offset: (page - 1) * page_size };
		const rows = (await this.db().query(
			`SELECT * FROM orders WHERE user_id = :user${filter} ORDER BY created_at DESC, id DESC LIMIT :limit OFFSET :offset`,
			{ replacements: repl, type: QueryTypes.SELECT }
		)) as OrderRow[];
		const [{ total }] = (await this.db().query(`SELECT COUNT(*) AS total FROM orders WHERE user_id = :user${filter}`, {
			replacements: repl,
			type: QueryTypes.SELECT
		})) as { total: number }[];
		return paged(
			rows.map(r => this.toOrder(r)),
			Number(total),
			page,
			page_size
		);
	},

	async findOrder(this: OrderThis, user: AuthUser, no: string) {
		const [row] = (await this.db().query("SELECT * FROM orders WHERE order_no = ?", {
			replacements: [no],
			type: QueryTypes.SELECT
		})) as OrderRow[];
		// Someone else's order does not exist for you: 404, not 403.
		if (!row || (Number(row.user_id) !== user.id && user.role !== ROLE_ADMIN)) throw bizError("ORDER_NOT_FOUND");
		return this.toOrder(row);
	}
} satisfies Partial<OrderMethods>;
