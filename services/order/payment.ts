import { bizError } from "../../lib/contract/errors";
import { OrderStatus } from "../../lib/domain/order";
import { inTransaction } from "../../lib/storage/tx";
import type { OrderMethods, OrderThis } from "./types";

/** Paying an order: the one transition out of pending payment that is not a close. */
export const paymentMethods = {
	/** Pending → paid, under the row lock: a racing close sees `paid`, or pay sees `closed`. */
	async payOrder(this: OrderThis, userId: number, no: string, payType: number) {
		const row = await inTransaction(this.db(), async t => {
			const order = await this.lockOrder(no, t);
			if (!order || Number(order.user_id) !== userId) throw bizError("ORDER_NOT_FOUND");
			if (order.status === OrderStatus.CLOSED) throw bizError("ORDER_CLOSED");
			if (
				order.status === OrderStatus.PAID ||
				order.status === OrderStatus.SHIPPED ||
				order.status === OrderStatus.COMPLETED
			)
				throw bizError("ORDER_ALREADY_PAID");
			if (order.status !== OrderStatus.PENDING_PAYMENT) throw bizError("ORDER_WRONG_STATUS");
			// Past the deadline the order is as good as closed, even if the closer has not run yet.
			if (order.expired) throw bizError("ORDER_CLOSED");
			await this.db().query("UPDATE orders SET status = ?, pay_type = ?, paid_at = NOW(3) WHERE id = ?", {
				replacements: [OrderStatus.PAID, payType, order.id],
				transaction: t
			});
			return { ...order, status: OrderStatus.PAID, pay_type: payType };
		});
		this.broker.emit("order.paid", { order_no: no, user_id: userId, product_id: Number(row.product_id) });
		return this.toOrder(row);
	}
} satisfies Partial<OrderMethods>;
