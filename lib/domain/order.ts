/**
 * An order's status (SPEC): 0 processing ... 5 cancelled or closed; 6 refunded (the buyer's
 * refund of a paid order: the next free number, so 0..5 keep their meaning for the Go clients).
 */
export const OrderStatus = {
	PROCESSING: 0,
	PENDING_PAYMENT: 1,
	PAID: 2,
	SHIPPED: 3,
	COMPLETED: 4,
	CLOSED: 5,
	REFUNDED: 6
} as const;
export const PAY_TYPES = [1, 2]; // 1 alipay, 2 wechat

export interface Order {
	id: number;
	order_no: string;
	user_id: number;
	product_id: number;
	product_name: string;
	product_image: string;
	quantity: number;
	total_price: number;
	status: number;
	pay_type: number;
	created_at: Date;
	updated_at: Date;
}

export interface OrderRow extends Omit<Order, "total_price"> {
	total_price: string;
	expires_at: Date;
	activity_id: number | null;
}

export interface CloseResult {
	closed: boolean;
	order?: OrderRow;
	/** the flash-sale arming whose Redis reservation the close gives back */
	arming?: string;
	/** its stock bucket (the buyer's home bucket; 0 when the sale is unbucketed) */
	bucket?: number;
}

/** A flash-sale activity's status in MySQL: its arming is live, or it was replaced or ended. */
export const ActivityStatus = { RETIRED: 0, LIVE: 1 } as const;

/** What the stock actor answers when the order actor claims a reservation for its order. */
export type ClaimResult = "claimed" | "released" | "unknown_arming";
