/** The REST contract (SPEC): every /api route and the action behind it. */
export const API_ALIASES: Record<string, string> = {
	"POST /user/register": "user.register",
	"POST /user/login": "user.login",
	"GET /user/profile": "user.profile",
	"PUT /user/:id": "user.update",

	"POST /auth/refresh-token": "user.refresh",
	"POST /auth/logout": "user.logout",
	"POST /auth/change-password": "user.changePassword",

	"GET /product": "product.list",
	"GET /product/:id": "product.get",
	"POST /product": "product.create",
	"PUT /product/:id": "product.update",
	"DELETE /product/:id": "product.remove",

	"POST /cart": "cart.add",
	"GET /cart": "cart.list",
	"PUT /cart": "cart.update",
	"DELETE /cart/clear": "cart.clear",
	"DELETE /cart": "cart.remove",

	"POST /order/checkout": "order.checkout",
	"POST /order": "order.create",
	"GET /order": "order.list",
	"GET /order/:order_no": "order.get",
	"POST /order/:order_no/pay": "order.pay",
	"POST /order/:order_no/cancel": "order.cancel",
	"POST /order/:order_no/refund": "order.refund",

	"POST /seckill/init": "stock.init",
	"POST /seckill": "stock.seckill",
	"GET /seckill/result": "stock.result",
	// Sale tokens (README "Sale tokens"): a token, and the captcha some sales ask for first.
	"GET /seckill/token": "stock.saleToken",
	"GET /seckill/captcha": "stock.captcha",
	"GET /seckill": "stock.list",

	// Uploads themselves are the multipart route's (uploads.ts); a delete is an ordinary call.
	"DELETE /upload/:name": "upload.remove"
};
