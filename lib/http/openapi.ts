/**
 * The OpenAPI 3 document, generated from the gateway's aliases and the actions' `params`
 * schemas (fastest-validator), so the documentation cannot drift from what is validated.
 */

import { Codes } from "../contract/codes";

export interface ActionInfo {
	params?: Record<string, unknown>;
	auth?: "user" | "admin";
	/** Accepts an Idempotency-Key header. */
	idempotent?: boolean;
	/** Business codes (keys of lib/contract/codes.ts) it answers besides the general ones. */
	codes?: string[];
}

/** "30001 order not found (404); …" for the codes an action declares. */
function codesText(keys: string[]): string {
	return keys
		.filter(k => Object.prototype.hasOwnProperty.call(Codes, k))
		.map(k => {
			const c = Codes[k as keyof typeof Codes];
			return `${c.biz} ${c.message} (HTTP ${c.http})`;
		})
		.join("; ");
}

type JsonSchema = Record<string, unknown>;

/** A multipart alias: its files go one by one to `action`; documented as form field `field`. */
export interface MultipartRoute {
	action: string;
	field: string;
	maxFiles: number;
}

interface Rule {
	type?: string;
	optional?: boolean;
	default?: unknown;
	min?: number;
	max?: number;
	integer?: boolean;
	positive?: boolean;
	pattern?: RegExp | string;
	values?: unknown[];
	items?: unknown;
}

function rule(def: unknown): Rule {
	if (typeof def === "string") return { type: def.split("|")[0], optional: def.includes("|optional") };
	return (def ?? {}) as Rule;
}

/** One fastest-validator rule as JSON Schema (the subset GoMall's actions use). */
export function toJsonSchema(def: unknown): JsonSchema {
	const r = rule(def);
	const pattern =
		r.pattern instanceof RegExp ? r.pattern.source : typeof r.pattern === "string" ? r.pattern : undefined;
	switch (r.type) {
		case "string":
			return clean({ type: "string", minLength: r.min, maxLength: r.max, pattern });
		case "email":
			return clean({ type: "string", format: "email", maxLength: r.max });
		case "number":
			return clean({
				type: r.integer ? "integer" : "number",
				minimum: r.min ?? (r.positive ? 1 : undefined),
				maximum: r.max,
				default: r.default
			});
		case "enum":
			return { enum: r.values ?? [] };
		case "date":
			return { type: "string", format: "date-time" };
		case "boolean":
			return { type: "boolean" };
		case "array":
			return clean({ type: "array", items: toJsonSchema(r.items), maxItems: r.max });
		default:
			return {};
	}
}

function clean(o: JsonSchema): JsonSchema {
	return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

const ERROR_RESPONSES: Record<string, string> = {
	"400": "Bad request: validation failures list the fields in data",
	"401": "Not logged in, token invalid (10006) or expired (10005)",
	"403": "Forbidden (10010 not admin)",
	"404": "Not found",
	"409": "Conflict: stock, status or duplicate",
	"429": "Too many requests (see Retry-After)",
	"503": "Unavailable, retry"
};

/** The header of the actions that accept one (SPEC "Repeated requests"); lib/storage/idempotency checks it. */
const IDEMPOTENCY_KEY_HEADER = {
	name: "Idempotency-Key",
	in: "header",
	required: false,
	description:
		"Makes the request safe to repeat: the same user, key and body within 24 h answer the first answer (same data, same status) without a second effect; the key with another body is refused (422). A refusal is not stored, so a retry with the key runs again.",
	schema: { type: "string", minLength: 1, maxLength: 128, pattern: "^[\\x20-\\x7E]+$" }
};

const envelopeResponse = (description: string) => ({
	description,
	content: { "application/json": { schema: { $ref: "#/components/schemas/Envelope" } } }
});

/** The operations routes (/health, /ready, /metrics, /version) share the per-IP api tier. */
const TOO_MANY = envelopeResponse(ERROR_RESPONSES["429"]);

/** Upload routes: a multipart/form-data body of image files, answered with the stored files. */
function multipartOperation(
	route: string,
	r: MultipartRoute,
	action: ActionInfo
): [string, string, Record<string, unknown>] {
	const [method, path] = route.split(/\s+/);
	const binary = { type: "string", format: "binary" };
	const file = {
		type: "object",
		properties: {
			url: { type: "string", example: "/uploads/0123456789abcdef0123456789abcdef.png" },
			name: { type: "string" },
			filename: { type: "string" },
			size: { type: "integer" },
			content_type: { type: "string", enum: ["image/png", "image/jpeg", "image/gif", "image/webp"] }
		}
	};
	const op: Record<string, unknown> = {
		operationId: `${r.action.replace(/\./g, "_")}_${r.maxFiles > 1 ? "multi" : "single"}`,
		tags: [r.action.split(".")[0]],
		summary: `${r.action}${action.auth ? ` (${action.auth})` : ""}: ${r.maxFiles > 1 ? `up to ${r.maxFiles} images` : "one image"} (PNG, JPEG, GIF, WebP, checked by their bytes); data is ${r.maxFiles > 1 ? "an array of" : ""} {url, name, filename, size, content_type}`,
		requestBody: {
			required: true,
			content: {
				"multipart/form-data": {
					schema: {
						type: "object",
						required: [r.field],
						properties: { [r.field]: r.maxFiles > 1 ? { type: "array", items: binary, maxItems: r.maxFiles } : binary }
					}
				}
			}
		},
		responses: {
			"200": {
				description: "Stored: code 0",
				content: {
					"application/json": {
						schema: {
							allOf: [
								{ $ref: "#/components/schemas/Envelope" },
								{ type: "object", properties: { data: r.maxFiles > 1 ? { type: "array", items: file } : file } }
							]
						}
					}
				}
			},
			"400": envelopeResponse(
				"70001 no file, 70003 not an image, 70007 too many files, 70008 malformed multipart body"
			),
			"401": envelopeResponse("Not logged in, token invalid (10006) or expired (10005)"),
			"413": envelopeResponse("70002 file too large"),
			"415": envelopeResponse("70008 not multipart/form-data"),
			"429": envelopeResponse("Too many requests (see Retry-After)"),
			"503": envelopeResponse("Unavailable, retry")
		}
	};
	if (action.auth) op.security = [{ bearerAuth: [] }];
	return [path, method.toLowerCase(), op];
}

export function buildOpenApi(
	basePath: string,
	aliases: Record<string, string>,
	actions: Map<string, ActionInfo>,
	version: string,
	multipart: { base: string; routes: Record<string, MultipartRoute> } = { base: "", routes: {} }
): JsonSchema {
	const paths: Record<string, Record<string, unknown>> = {};
	for (const [route, actionName] of Object.entries(aliases)) {
		const [method, rawPath] = route.split(/\s+/);
		const path = (basePath + rawPath).replace(/:([A-Za-z_]+)/g, "{$1}");
		const pathParams = [...rawPath.matchAll(/:([A-Za-z_]+)/g)].map(m => m[1]);
		const action = actions.get(actionName) ?? {};
		const params = Object.entries(action.params ?? {}).filter(([k]) => !k.startsWith("$$"));
		const inBody = method === "POST" || method === "PUT";
		const parameters: unknown[] = [];
		const bodyProps: Record<string, JsonSchema> = {};
		const required: string[] = [];
		for (const [name, def] of params) {
			const r = rule(def);
			const schema = toJsonSchema(def);
			const isRequired = !r.optional && r.default === undefined;
			if (pathParams.includes(name)) parameters.push({ name, in: "path", required: true, schema });
			else if (!inBody) parameters.push({ name, in: "query", required: isRequired, schema });
			else {
				bodyProps[name] = schema;
				if (isRequired) required.push(name);
			}
		}
		for (const name of pathParams)
			if (!parameters.some((p: any) => p.name === name))
				parameters.push({ name, in: "path", required: true, schema: { type: "string" } });

		if (action.idempotent) parameters.push(IDEMPOTENCY_KEY_HEADER);

		const op: Record<string, unknown> = {
			operationId: actionName.replace(/\./g, "_") + "_" + method.toLowerCase(),
			tags: [actionName.split(".")[0]],
			summary: `${actionName}${action.auth ? ` (${action.auth})` : ""}`,
			parameters,
			responses: {
				"200": {
					description: "Success: code 0",
					content: { "application/json": { schema: { $ref: "#/components/schemas/Envelope" } } }
				},
				...Object.fromEntries(
					Object.entries(ERROR_RESPONSES).map(([code, description]) => [
						code,
						{ description, content: { "application/json": { schema: { $ref: "#/components/schemas/Envelope" } } } }
					])
				),
				...(action.idempotent
					? {
							"422": envelopeResponse(
								`${Codes.IDEMPOTENCY_KEY_REUSED.biz}: the Idempotency-Key was already used with another request`
							)
						}
					: {})
			}
		};
		if (inBody)
			op.requestBody = {
				required: required.length > 0,
				content: {
					"application/json": {
						schema: clean({ type: "object", properties: bodyProps, required: required.length ? required : undefined })
					}
				}
			};
		if (action.auth) op.security = [{ bearerAuth: [] }];
		if (action.codes?.length) {
			op.description = `Business codes: ${codesText(action.codes)}.`;
			for (const k of action.codes) {
				const http = Codes[k as keyof typeof Codes]?.http;
				const responses = op.responses as Record<string, unknown>;
				if (http && !responses[String(http)]) responses[String(http)] = envelopeResponse(codesText([k]));
			}
		}
		(paths[path] ??= {})[method.toLowerCase()] = op;
	}
	for (const [route, r] of Object.entries(multipart.routes)) {
		const [method, rawPath] = route.split(/\s+/);
		const [path, verb, op] = multipartOperation(
			`${method} ${(multipart.base + rawPath).replace(/(.)\/$/, "$1")}`,
			r,
			actions.get(r.action) ?? {}
		);
		(paths[path] ??= {})[verb] = op;
	}
	paths["/uploads/{name}"] = {
		get: {
			operationId: "upload_get",
			tags: ["upload"],
			summary: "A stored image (immutable: cached for a year; X-Content-Type-Options: nosniff)",
			parameters: [
				{
					name: "name",
					in: "path",
					required: true,
					schema: { type: "string", pattern: "^[0-9a-f]{32}\\.(png|jpg|gif|webp)$" }
				}
			],
			responses: {
				"200": {
					description: "The image",
					content: Object.fromEntries(
						["image/png", "image/jpeg", "image/gif", "image/webp"].map(t => [
							t,
							{ schema: { type: "string", format: "binary" } }
						])
					)
				},
				"404": envelopeResponse("70005 no such file")
			}
		}
	};
	// The payment provider's notify (SPEC "Payments"): not an envelope route, WeChat Pay's own contract.
	paths["/api/pay/wechat/notify"] = {
		post: {
			operationId: "pay_wechat_notify",
			tags: ["order"],
			summary:
				"WeChat Pay v3 notify (no token): Wechatpay-Signature over timestamp\\nnonce\\nbody\\n is checked with the platform key, the AEAD_AES_256_GCM resource decrypted with the APIv3 key; each transaction_id is applied once",
			parameters: ["Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature", "Wechatpay-Serial"].map(name => ({
				name,
				in: "header",
				required: true,
				schema: { type: "string" }
			})),
			requestBody: {
				required: true,
				content: {
					"application/json": {
						schema: {
							type: "object",
							required: ["id", "event_type", "resource"],
							properties: {
								id: { type: "string" },
								create_time: { type: "string" },
								event_type: { type: "string", example: "TRANSACTION.SUCCESS" },
								resource_type: { type: "string", example: "encrypt-resource" },
								resource: {
									type: "object",
									required: ["algorithm", "ciphertext", "nonce"],
									properties: {
										algorithm: { type: "string", enum: ["AEAD_AES_256_GCM"] },
										ciphertext: { type: "string" },
										nonce: { type: "string" },
										associated_data: { type: "string" },
										original_type: { type: "string" }
									}
								}
							}
						}
					}
				}
			},
			responses: {
				"204": { description: "Applied, or already applied (a resent notify)" },
				...Object.fromEntries(
					[
						["400", "Bad notify (amount, ids, trade_state, not decryptable): nothing changed"],
						["401", "Signature or timestamp refused: nothing changed"],
						["404", "Unknown order or refund: nothing changed"],
						["409", "Order not awaiting payment yet: nothing changed"],
						["503", "Unavailable, the provider retries"]
					].map(([code, description]) => [
						code,
						{
							description,
							content: {
								"application/json": {
									schema: {
										type: "object",
										required: ["code", "message"],
										properties: { code: { type: "string", enum: ["FAIL"] }, message: { type: "string" } }
									}
								}
							}
						}
					])
				)
			}
		}
	};
	// The flash sale's pushed result (README "Pushed results (SSE)"): an event stream, not an envelope.
	paths[`${basePath}/seckill/result/stream`] = {
		get: {
			operationId: "stock_result_stream",
			tags: ["stock"],
			summary:
				"Server-Sent Events of the caller's result for a product: queued {order_no}, then one final success {order_no} or failed {reason, order_no?}, then the stream ends; `: ping` heartbeats between",
			security: [{ bearerAuth: [] }],
			parameters: [{ name: "product_id", in: "query", required: true, schema: { type: "integer", minimum: 1 } }],
			responses: {
				"200": {
					description: "The event stream",
					content: {
						"text/event-stream": { schema: { type: "string", example: 'event: queued\ndata: {"order_no":"..."}\n\n' } }
					}
				},
				"401": envelopeResponse(ERROR_RESPONSES["401"]),
				"429": envelopeResponse("60014 too many streams of this user, 60015 this gateway's streams are full"),
				"503": envelopeResponse("Draining or starting: retry (Retry-After)")
			}
		}
	};
	paths["/version"] = {
		get: {
			operationId: "version",
			tags: ["operations"],
			summary:
				"API version (version, api_prefix, recommended_prefix) and this build (app_version, build: null when unknown)",
			responses: { "200": envelopeResponse("Success: code 0"), "429": TOO_MANY }
		}
	};
	const plain = (description: string) => ({
		responses: { "200": { description }, "429": TOO_MANY, "503": { description: "Not ready or unhealthy" } }
	});
	paths["/health"] = { get: { operationId: "health", tags: ["operations"], ...plain("Component health") } };
	paths["/ready"] = { get: { operationId: "ready", tags: ["operations"], ...plain("Ready to serve") } };
	paths["/metrics"] = {
		get: {
			operationId: "metrics",
			tags: ["operations"],
			responses: { "200": { description: "Prometheus text format" }, "429": TOO_MANY }
		}
	};

	return {
		openapi: "3.0.3",
		info: {
			title: "GoMall API",
			version,
			description:
				"Flash-sale e-commerce backend on Moleculer. Every /api response is the envelope {code, message, data, trace_id}."
		},
		servers: [{ url: "/" }],
		paths,
		components: {
			securitySchemes: { bearerAuth: { type: "http", scheme: "bearer", bearerFormat: "JWT" } },
			schemas: {
				Envelope: {
					type: "object",
					required: ["code", "message", "data", "trace_id"],
					properties: {
						code: { type: "integer", description: "0 on success, else the business code" },
						message: { type: "string" },
						data: { nullable: true },
						trace_id: { type: "string", nullable: true }
					}
				}
			}
		}
	};
}
