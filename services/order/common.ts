import { QueryTypes, Transaction } from "sequelize";
import { getConfig } from "../../config";
import { Order, OrderRow } from "../../lib/domain/order";
import type { OrderMethods, OrderThis } from "./types";

/** What every concern of the order actor uses: its pool, its pay timeout, the row shape, the row lock. */
export const commonMethods = {
	db(this: OrderThis) {
		return this.adapter.db;
	},

	payTimeoutMs() {
		return Math.round(getConfig().order.pay_timeout * 1000);
	},

	toOrder(row: OrderRow): Order {
		return {
			id: Number(row.id),
			order_no: row.order_no,
			user_id: Number(row.user_id),
			product_id: Number(row.product_id),
			product_name: row.product_name,
			product_image: row.product_image,
			quantity: row.quantity,
			total_price: Number(row.total_price),
			status: row.status,
			pay_type: row.pay_type,
			created_at: row.created_at,
			updated_at: row.updated_at
		};
	},

	/** The row, locked until the transaction ends, with whether its payment window has passed. */
	async lockOrder(this: OrderThis, no: string, transaction: Transaction) {
		const [row] = (await this.db().query(
			"SELECT *, expires_at <= NOW(3) AS expired FROM orders WHERE order_no = ? FOR UPDATE",
			{
				replacements: [no],
				type: QueryTypes.SELECT,
				transaction
			}
		)) as (OrderRow & { expired: number })[];
		return row;
	}
} satisfies Partial<OrderMethods>;
