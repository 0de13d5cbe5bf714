import { QueryTypes, Transaction } from "sequelize";
import { bizError } from "../../lib/contract/errors";
import { toCents } from "../../lib/domain/money";
import { OrderStatus, OrderRow } from "../../lib/domain/order";
import {
	NotifyHeaders,
	NotifyRefused,
	NotifyVerdict,
	outRefundNo,
	ProviderError,
	ProviderRefund,
	ProviderTransaction
} from "../../lib/domain/payment";
import { inTransaction } from "../../lib/storage/tx";
import type { NotifyAnswer, OrderMethods, OrderThis, PrepayAnswer, RefundAnswer } from "./types";

/** The pay_type a provider's payments are recorded with (SPEC: 1 alipay, 2 wechat). */
const PAY_TYPE_OF = { wechat: 2 } as const;
/** A stored prepay is reused only while this much of it is left. */
const PREPAY_REUSE_MARGIN_S = 30;
/** A refund row the provider has not accepted yet; the periodic sweep sends it again. */
const REFUND_PENDING = "PENDING";
/** A refund the provider refused for good: never sent again by the sweep; an operator settles it. */
const REFUND_REFUSED = "REFUSED";
/**
 * Refusals that pass: the rate limit, and WeChat's NOT_ENOUGH (the merchant's balance is short
 * until the day's takings settle). Every other 4xx names a request that will never succeed.
 */
const REFUSED_FOR_NOW = new Set(["FREQUENCY_LIMITED", "NOT_ENOUGH"]);
const ER_DUP_ENTRY = 1062;
/** What one report of a transaction did. */
type Applied = "paid" | "refund" | "ignored" | "duplicate";

function errno(err: unknown): number | undefined {
	const e = err as { parent?: { errno?: number }; original?: { errno?: number } };
	return e?.parent?.errno ?? e?.original?.errno;
}

/** A provider failure as the buyer sees it: unreachable or 5xx is "retry", a refusal is final. */
function providerFailure(err: unknown): Error {
	if (err instanceof ProviderError)
		return bizError(err.refused ? "PAYMENT_PROVIDER_REFUSED" : "PAYMENT_PROVIDER_UNAVAILABLE");
	return err as Error;
}

/**
 * Paying an order. `direct`: pending → paid at once. With a provider (WeChat Pay v3 Native):
 * pay asks for a prepay and the order stays pending until the provider reports the payment,
 * by its signed notify or by the query before the unpaid close; each provider transaction is
 * applied once (the `payments` ledger's unique key), whatever the number of reports.
 */
export const paymentMethods = {
	/** Pending → paid, under the row lock: a racing close sees `paid`, or pay sees `closed`. */
	async payOrder(this: OrderThis, userId: number, no: string, payType: number) {
		if (this.payProvider) {
			if (payType !== PAY_TYPE_OF[this.payProvider.name]) throw bizError("ORDER_PAY_TYPE_UNAVAILABLE");
			return this.prepayOrder(userId, no);
		}
		const row = await inTransaction(this.db(), async t => {
			const order = await this.lockOrder(no, t);
			if (!order || Number(order.user_id) !== userId) throw bizError("ORDER_NOT_FOUND");
			this.assertPayable(order);
			await this.db().query("UPDATE orders SET status = ?, pay_type = ?, paid_at = NOW(3) WHERE id = ?", {
				replacements: [OrderStatus.PAID, payType, order.id],
				transaction: t
			});
			return { ...order, status: OrderStatus.PAID, pay_type: payType };
		});
		this.broker.metrics.increment("gomall_payments_total", { provider: "direct", outcome: "paid" });
		this.broker.emit("order.paid", { order_no: no, user_id: userId, product_id: Number(row.product_id) });
		return this.toOrder(row);
	},

	/** Pay's refusals, the same for direct and provider payments. */
	assertPayable(order: OrderRow & { expired: number }) {
		if (order.status === OrderStatus.CLOSED) throw bizError("ORDER_CLOSED");
		if (
			order.status === OrderStatus.PAID ||
			order.status === OrderStatus.SHIPPED ||
			order.status === OrderStatus.COMPLETED ||
			order.status === OrderStatus.REFUNDED
		)
			throw bizError("ORDER_ALREADY_PAID");
		if (order.status !== OrderStatus.PENDING_PAYMENT) throw bizError("ORDER_WRONG_STATUS");
		// Past the deadline the order is as good as closed, even if the closer has not run yet.
		if (order.expired) throw bizError("ORDER_CLOSED");
	},

	/**
	 * The provider's prepay for a pending order, stored and reused while valid: a double click
	 * answers the same code_url. The provider call is made outside the row lock; two racing
	 * calls ask for the same out_trade_no with the same parameters, which the provider answers
	 * with the same prepay, and the first stored wins.
	 */
	async prepayOrder(this: OrderThis, userId: number, no: string): Promise<PrepayAnswer> {
		const provider = this.payProvider!;
		const { order, stored } = await inTransaction(this.db(), async t => {
			const order = await this.lockOrder(no, t);
			if (!order || Number(order.user_id) !== userId) throw bizError("ORDER_NOT_FOUND");
			this.assertPayable(order);
			return { order, stored: await this.validPrepay(no, t) };
		});
		if (stored) return stored;
		let prepay;
		try {
			prepay = await provider.prepay({
				out_trade_no: no,
				description: order.product_name,
				total: toCents(order.total_price),
				expires_at: new Date(order.expires_at)
			});
		} catch (err) {
			this.broker.metrics.increment("gomall_payments_total", { provider: provider.name, outcome: "error" });
			this.logger.warn(`order ${no}: prepay failed (${(err as Error).message})`);
			throw providerFailure(err);
		}
		this.broker.metrics.increment("gomall_payments_total", { provider: provider.name, outcome: "prepay" });
		// An expired stored prepay is replaced; a valid one (a racing call's) is kept.
		await this.db().query(
			`INSERT INTO payment_prepays (order_no, provider, code_url, expires_at) VALUES (?, ?, ?, ?)
			 ON DUPLICATE KEY UPDATE code_url = IF(expires_at > NOW(3), code_url, VALUES(code_url)),
			 expires_at = IF(expires_at > NOW(3), expires_at, VALUES(expires_at))`,
			{ replacements: [no, provider.name, prepay.code_url, prepay.expires_at] }
		);
		return (await this.validPrepay(no, undefined, 0)) ?? { order_no: no, ...prepay };
	},

	async validPrepay(this: OrderThis, no: string, transaction?: Transaction, marginS = PREPAY_REUSE_MARGIN_S) {
		const [row] = (await this.db().query(
			"SELECT code_url, expires_at FROM payment_prepays WHERE order_no = ? AND expires_at > NOW(3) + INTERVAL ? SECOND",
			{ replacements: [no, marginS], type: QueryTypes.SELECT, transaction }
		)) as { code_url: string; expires_at: Date }[];
		return row ? { order_no: no, code_url: row.code_url, expires_at: new Date(row.expires_at) } : null;
	},

	/**
	 * The provider's notify, as the gateway read it (its exact bytes, base64). Answers what the
	 * gateway sends back: 204 when applied or already applied, 4xx (WeChat's FAIL) for a bad
	 * one, which changes nothing.
	 */
	async paymentNotify(this: OrderThis, headers: NotifyHeaders, bodyBase64: string): Promise<NotifyAnswer> {
		const provider = this.payProvider;
		if (!provider) return { status: 404, message: "no payment provider is configured" };
		const count = (verdict: NotifyVerdict) =>
			this.broker.metrics.increment("gomall_payment_notifies_total", { provider: provider.name, verdict });
		try {
			const event = provider.parseNotify(headers, Buffer.from(bodyBase64, "base64"));
			const verdict =
				event.kind === "transaction"
					? await this.applyTransaction(event.transaction, "notify")
					: await this.settleRefund(event.refund);
			count(verdict);
			return { status: 204, verdict };
		} catch (err) {
			if (!(err instanceof NotifyRefused)) throw err;
			count("refused");
			// The reason only: never the body, a signature or a key.
			this.logger.warn(`${provider.name} notify refused: ${err.message}`);
			return { status: err.status, message: err.message, verdict: "refused" };
		}
	},

	/**
	 * A payment the provider reports (notify or query), applied once per transaction id. The
	 * order must be ours and its amount equal the order's total in fen. A pending order becomes
	 * paid; a closed one (the unpaid close won) keeps its close and the money is refunded at
	 * once; a paid, shipped, completed or refunded one is not changed (logged).
	 */
	async applyTransaction(this: OrderThis, tx: ProviderTransaction, source: "notify" | "query"): Promise<NotifyVerdict> {
		const provider = this.payProvider!;
		if (!provider.isOurs(tx)) throw new NotifyRefused("mchid or appid is not ours");
		if (tx.trade_state !== "SUCCESS")
			throw new NotifyRefused(`trade_state ${tx.trade_state.slice(0, 20)} is not SUCCESS`);
		if (!tx.transaction_id || tx.transaction_id.length > 64) throw new NotifyRefused("bad transaction_id");
		if (!/^[0-9]{1,32}$/.test(tx.out_trade_no)) throw new NotifyRefused("unknown order", 404);
		let outcome: Applied;
		let order: OrderRow;
		try {
			({ outcome, order } = await inTransaction(
				this.db(),
				async (t): Promise<{ outcome: Applied; order: OrderRow }> => {
					const order = await this.lockOrder(tx.out_trade_no, t);
					if (!order) throw new NotifyRefused("unknown order", 404);
					if (!Number.isInteger(tx.total) || tx.total !== toCents(order.total_price))
						throw new NotifyRefused("amount does not match the order");
					const [seen] = (await this.db().query(
						"SELECT order_no FROM payments WHERE provider = ? AND transaction_id = ?",
						{ replacements: [provider.name, tx.transaction_id], type: QueryTypes.SELECT, transaction: t }
					)) as { order_no: string }[];
					if (seen) {
						if (seen.order_no !== tx.out_trade_no)
							throw new NotifyRefused("transaction_id belongs to another order", 409);
						return { outcome: "duplicate", order };
					}
					if (order.status === OrderStatus.PROCESSING)
						throw new NotifyRefused("order is not awaiting payment yet", 409);
					const outcome: Applied =
						order.status === OrderStatus.PENDING_PAYMENT
							? "paid"
							: order.status === OrderStatus.CLOSED
								? "refund"
								: "ignored";
					if (outcome === "ignored") return { outcome, order };
					await this.db().query(
						"INSERT INTO payments (provider, transaction_id, order_no, amount_fen, outcome, source) VALUES (?, ?, ?, ?, ?, ?)",
						{
							replacements: [provider.name, tx.transaction_id, tx.out_trade_no, tx.total, outcome, source],
							transaction: t
						}
					);
					if (outcome === "paid") {
						await this.db().query("UPDATE orders SET status = ?, pay_type = ?, paid_at = NOW(3) WHERE id = ?", {
							replacements: [OrderStatus.PAID, PAY_TYPE_OF[provider.name], order.id],
							transaction: t
						});
					} else {
						// The close gave the stock back already: only the money goes back.
						await this.db().query(
							"INSERT IGNORE INTO refunds (order_no, out_refund_no, provider, amount_fen, reason, status) VALUES (?, ?, ?, ?, 'paid_after_close', ?)",
							{
								replacements: [order.order_no, outRefundNo(order.order_no), provider.name, tx.total, REFUND_PENDING],
								transaction: t
							}
						);
					}
					return { outcome, order };
				}
			));
		} catch (err) {
			// A racing report of the same transaction committed first (the unique key).
			if (errno(err) === ER_DUP_ENTRY) return "duplicate";
			throw err;
		}
		if (outcome === "duplicate") return "duplicate";
		if (outcome === "ignored") {
			this.logger.warn(
				`order ${order.order_no}: ${provider.name} payment ${tx.transaction_id} reported for an order in status ${order.status}; nothing changed`
			);
			return "ignored";
		}
		if (outcome === "paid") {
			this.broker.metrics.increment("gomall_payments_total", { provider: provider.name, outcome: "paid" });
			this.broker.emit("order.paid", {
				order_no: order.order_no,
				user_id: Number(order.user_id),
				product_id: Number(order.product_id)
			});
		} else {
			this.broker.metrics.increment("gomall_payments_total", { provider: provider.name, outcome: "paid_after_close" });
			this.logger.warn(`order ${order.order_no}: paid after its close; refunding`);
			await this.sendRefund(order.order_no);
		}
		return "applied";
	},

	/**
	 * What the provider says before an unpaid order is closed (timeout or the buyer's cancel):
	 * paid means paid (applied, not closed); otherwise the provider's transaction is closed
	 * first, so no payment can follow the local close. Unreachable: the close waits (its message
	 * is retried; the sweep tries again).
	 */
	async settleBeforeClose(this: OrderThis, no: string): Promise<"paid" | "open"> {
		const provider = this.payProvider!;
		try {
			let tx = await provider.query(no);
			if (["NOTPAY", "USERPAYING", "PAYERROR"].includes(tx.trade_state)) {
				try {
					await provider.close(no);
					this.broker.metrics.increment("gomall_payments_total", { provider: provider.name, outcome: "closed" });
				} catch (err) {
					if (!(err instanceof ProviderError && err.code === "ORDERPAID")) throw err;
					tx = await provider.query(no);
				}
			}
			if (tx.trade_state !== "SUCCESS") return "open";
			const verdict = await this.applyTransaction(tx, "query");
			if (verdict === "applied")
				this.broker.metrics.increment("gomall_payments_total", { provider: provider.name, outcome: "paid_by_query" });
			return "paid";
		} catch (err) {
			if (err instanceof NotifyRefused) {
				this.logger.error(`order ${no}: the provider's payment does not match the order (${err.message}); not closed`);
				throw bizError("PAYMENT_PROVIDER_REFUSED");
			}
			this.broker.metrics.increment("gomall_payments_total", { provider: provider.name, outcome: "error" });
			this.logger.warn(`order ${no}: provider query/close before the close failed (${(err as Error).message})`);
			throw providerFailure(err);
		}
	},

	/**
	 * The buyer's refund of a paid, unshipped order: → refunded (6), the stock back in the
	 * same transaction (once: the transition happens once), the money back through the
	 * provider with out_refund_no as its idempotency key. A repeated request answers the same
	 * refund; a refund the provider has not accepted yet is sent again (the same key).
	 */
	async refundOrder(this: OrderThis, userId: number, no: string): Promise<RefundAnswer> {
		const { row, refund, fresh } = await inTransaction(this.db(), async t => {
			const order = await this.lockOrder(no, t);
			if (!order || Number(order.user_id) !== userId) throw bizError("ORDER_NOT_FOUND");
			if (order.status === OrderStatus.REFUNDED) {
				return { row: order, refund: await this.refundRow(no, t), fresh: false };
			}
			if (order.status !== OrderStatus.PAID) throw bizError("ORDER_NOT_REFUNDABLE");
			const [paid] = (await this.db().query(
				"SELECT provider, amount_fen FROM payments WHERE order_no = ? AND outcome = 'paid' ORDER BY id LIMIT 1",
				{ replacements: [no], type: QueryTypes.SELECT, transaction: t }
			)) as { provider: string; amount_fen: number }[];
			// Paid without a provider (direct): nothing to send back through one.
			const provider = paid ? paid.provider : "direct";
			const status = paid ? REFUND_PENDING : "SUCCESS";
			const amount = paid ? Number(paid.amount_fen) : toCents(order.total_price);
			await this.db().query(
				"INSERT INTO refunds (order_no, out_refund_no, provider, amount_fen, reason, status) VALUES (?, ?, ?, ?, 'buyer', ?)",
				{ replacements: [no, outRefundNo(no), provider, amount, status], transaction: t }
			);
			await this.db().query("UPDATE orders SET status = ?, refunded_at = NOW(3) WHERE id = ?", {
				replacements: [OrderStatus.REFUNDED, order.id],
				transaction: t
			});
			// An ordinary order's stock goes back to its product. A flash-sale unit is not put back
			// on sale: the stock actor's reconciliation counts every order that is not closed as
			// holding its unit.
			if (!order.activity_id)
				await this.db().query("UPDATE products SET stock = stock + ? WHERE id = ?", {
					replacements: [order.quantity, order.product_id],
					transaction: t
				});
			const refund = { out_refund_no: outRefundNo(no), provider, status, amount_fen: amount, refund_id: null };
			return { row: { ...order, status: OrderStatus.REFUNDED }, refund, fresh: true };
		});
		if (fresh) {
			this.broker.metrics.increment("gomall_refunds_total", { provider: refund!.provider, outcome: "requested" });
			if (refund!.status === "SUCCESS")
				this.broker.metrics.increment("gomall_refunds_total", { provider: refund!.provider, outcome: "succeeded" });
			if (!row.activity_id) this.broker.emit("product.stock.changed", { product_id: Number(row.product_id) });
			this.broker.emit("order.refunded", { order_no: no, user_id: userId, product_id: Number(row.product_id) });
		}
		let current = refund;
		if (current?.status === REFUND_PENDING) current = (await this.sendRefund(no)) ?? current;
		return {
			...this.toOrder(row),
			refund: current ? { out_refund_no: current.out_refund_no, status: current.status } : null
		};
	},

	async refundRow(this: OrderThis, no: string, transaction?: Transaction) {
		const [row] = (await this.db().query(
			"SELECT out_refund_no, provider, status, amount_fen, refund_id FROM refunds WHERE order_no = ?",
			{ replacements: [no], type: QueryTypes.SELECT, transaction }
		)) as { out_refund_no: string; provider: string; status: string; amount_fen: number; refund_id: string | null }[];
		return row ?? null;
	},

	/**
	 * Sends a PENDING refund to the provider (again: the same out_refund_no is the same refund
	 * there). A failure leaves it PENDING for the next sweep; the buyer is not refused for it.
	 */
	async sendRefund(this: OrderThis, no: string) {
		const provider = this.payProvider;
		const row = await this.refundRow(no);
		if (!row || row.status !== REFUND_PENDING || !provider || row.provider !== provider.name) return row;
		const [paid] = (await this.db().query(
			"SELECT amount_fen FROM payments WHERE order_no = ? AND provider = ? ORDER BY id LIMIT 1",
			{ replacements: [no, provider.name], type: QueryTypes.SELECT }
		)) as { amount_fen: number }[];
		try {
			const r = await provider.refund({
				out_trade_no: no,
				out_refund_no: row.out_refund_no,
				total: Number(paid?.amount_fen ?? row.amount_fen),
				refund: Number(row.amount_fen),
				reason: "GoMall refund"
			});
			// Not over a settled state: the refund notify may have come first.
			await this.db().query(
				`UPDATE refunds SET status = ?, refund_id = ? WHERE out_refund_no = ? AND status = '${REFUND_PENDING}'`,
				{ replacements: [r.status || "PROCESSING", r.refund_id || null, row.out_refund_no] }
			);
			if (r.status === "SUCCESS")
				this.broker.metrics.increment("gomall_refunds_total", { provider: provider.name, outcome: "succeeded" });
		} catch (err) {
			if (err instanceof ProviderError && err.refused && err.status !== 429 && !REFUSED_FOR_NOW.has(err.code)) {
				await this.db().query(
					`UPDATE refunds SET status = '${REFUND_REFUSED}' WHERE out_refund_no = ? AND status = '${REFUND_PENDING}'`,
					{ replacements: [row.out_refund_no] }
				);
				this.broker.metrics.increment("gomall_refunds_total", { provider: provider.name, outcome: "refused" });
				this.logger.error(
					`order ${no}: refund refused by the provider (${err.status} ${err.code}); not sent again, an operator must settle it`
				);
			} else {
				this.broker.metrics.increment("gomall_refunds_total", { provider: provider.name, outcome: "error" });
				this.logger.warn(`order ${no}: refund request failed (${(err as Error).message}); the sweep sends it again`);
			}
		}
		return this.refundRow(no);
	},

	/** Every refund still waiting for the provider's acceptance, sent again (the periodic sweep). */
	async resendRefunds(this: OrderThis, limit = 100): Promise<number> {
		if (!this.payProvider) return 0;
		const rows = (await this.db().query(
			`SELECT order_no FROM refunds WHERE status = '${REFUND_PENDING}' AND provider = ? ORDER BY id LIMIT ?`,
			{ replacements: [this.payProvider.name, limit], type: QueryTypes.SELECT }
		)) as { order_no: string }[];
		let sent = 0;
		for (const { order_no } of rows) if ((await this.sendRefund(order_no))?.status !== REFUND_PENDING) sent++;
		return sent;
	},

	/** A refund notify: settles the refund once (a later one of the same state is a duplicate). */
	async settleRefund(this: OrderThis, r: ProviderRefund): Promise<NotifyVerdict> {
		const row = (await this.db().query(
			"SELECT order_no, status, amount_fen FROM refunds WHERE out_refund_no = ? AND provider = ?",
			{ replacements: [r.out_refund_no, this.payProvider!.name], type: QueryTypes.SELECT }
		)) as { order_no: string; status: string; amount_fen: number }[];
		const refund = row[0];
		if (!refund || refund.order_no !== r.out_trade_no) throw new NotifyRefused("unknown refund", 404);
		if (r.refund !== Number(refund.amount_fen)) throw new NotifyRefused("refund amount does not match");
		if (!["SUCCESS", "CLOSED", "ABNORMAL"].includes(r.status)) throw new NotifyRefused("refund_status is not final");
		const [, meta] = (await this.db().query(
			`UPDATE refunds SET status = ?, refund_id = ? WHERE out_refund_no = ? AND status IN ('${REFUND_PENDING}', 'PROCESSING')`,
			{ replacements: [r.status, r.refund_id || null, r.out_refund_no], type: QueryTypes.UPDATE }
		)) as [unknown, { affectedRows?: number } | number];
		const changed = typeof meta === "number" ? meta : (meta?.affectedRows ?? 0);
		if (!changed) return "duplicate";
		const outcome = r.status === "SUCCESS" ? "succeeded" : "failed";
		this.broker.metrics.increment("gomall_refunds_total", { provider: this.payProvider!.name, outcome });
		if (outcome === "failed")
			this.logger.error(`order ${refund.order_no}: refund ${r.status} at the provider; an operator must settle it`);
		return "applied";
	}
} satisfies Partial<OrderMethods>;
