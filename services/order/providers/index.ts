import type { Config } from "../../../config";
import type { PaymentProvider } from "../../../lib/domain/payment";
import { WechatPay } from "./wechat";

/** The configured provider; null for `direct` (paying completes at once). Alipay: one more case and file. */
export function paymentProvider(pay: Config["pay"]): PaymentProvider | null {
	switch (pay.provider) {
		case "wechat":
			return new WechatPay(pay.wechat);
		default:
			return null;
	}
}
