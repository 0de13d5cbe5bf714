/**
 * Payments through a provider (SPEC "Payments"): what the order actor asks of one (prepay,
 * query, close, refund) and what it learns from one (a verified notify). WeChat Pay v3 is
 * services/order/providers/wechat.ts; another provider (Alipay) is one more file there that
 * implements PaymentProvider. `direct` (dev and test) has no provider: paying completes at once.
 */

export type ProviderName = "direct" | "wechat";

/** A prepay the buyer completes in the provider's app: Native pay's QR code URL. */
export interface Prepay {
	code_url: string;
	expires_at: Date;
}

/** One payment as the provider reports it (a notify's resource or a query's answer). */
export interface ProviderTransaction {
	mchid: string;
	appid: string;
	out_trade_no: string;
	/** empty until paid */
	transaction_id: string;
	/** SUCCESS, NOTPAY, CLOSED, REFUND, USERPAYING, PAYERROR, REVOKED; NOTEXIST: the provider has no such order */
	trade_state: string;
	/** fen (cents) */
	total: number;
}

/** One refund as the provider reports it. */
export interface ProviderRefund {
	mchid: string;
	out_trade_no: string;
	out_refund_no: string;
	refund_id: string;
	/** PROCESSING, SUCCESS, CLOSED, ABNORMAL */
	status: string;
	/** fen */
	refund: number;
	total: number;
}

/** A notify whose signature, age and encryption were verified: a payment's or a refund's. */
export type NotifyEvent =
	| { kind: "transaction"; id: string; transaction: ProviderTransaction }
	| { kind: "refund"; id: string; refund: ProviderRefund };

/** The headers of a notify the provider signs (lower case, as Node gives them). */
export type NotifyHeaders = Record<string, string | undefined>;

export interface PaymentProvider {
	readonly name: Exclude<ProviderName, "direct">;
	prepay(p: { out_trade_no: string; description: string; total: number; expires_at: Date }): Promise<Prepay>;
	query(outTradeNo: string): Promise<ProviderTransaction>;
	/** Closes an unpaid transaction; throws ProviderError ORDERPAID when it was paid meanwhile. */
	close(outTradeNo: string): Promise<void>;
	/** Idempotent by out_refund_no: the same one again is the same refund. */
	refund(r: {
		out_trade_no: string;
		out_refund_no: string;
		total: number;
		refund: number;
		reason: string;
	}): Promise<ProviderRefund>;
	/** Verifies and decrypts a notify over its exact bytes; throws NotifyRefused for a bad one. */
	parseNotify(headers: NotifyHeaders, body: Buffer, nowMs?: number): NotifyEvent;
	/** Whether a verified transaction is this merchant's (mchid, appid). */
	isOurs(t: Pick<ProviderTransaction, "mchid" | "appid">): boolean;
}

/** A provider call that failed: `status` 0 when it never answered (network, timeout). */
export class ProviderError extends Error {
	override name = "ProviderError";
	constructor(
		readonly status: number,
		readonly code: string,
		message: string
	) {
		super(message);
	}
	/** The provider answered and refused: retrying the same request will not help. */
	get refused(): boolean {
		return this.status >= 400 && this.status < 500;
	}
}

/** A notify that must change nothing: answered 4xx with `{code: "FAIL", message}`. */
export class NotifyRefused extends Error {
	override name = "NotifyRefused";
	constructor(
		message: string,
		readonly status = 400
	) {
		super(message);
	}
}

/** Each refund's idempotency key at the provider: one refund per order. */
export function outRefundNo(orderNo: string): string {
	return `R${orderNo}`;
}

/** How a notify was answered (metric label `verdict`). */
export const NOTIFY_VERDICTS = ["applied", "duplicate", "ignored", "refused"] as const;
export type NotifyVerdict = (typeof NOTIFY_VERDICTS)[number];
