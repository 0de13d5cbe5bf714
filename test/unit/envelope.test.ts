import { Errors } from "moleculer";
import { bizError, rejection } from "../../lib/contract/errors";
import { renderError, resultEnvelope } from "../../lib/contract/envelope";
import { Codes } from "../../lib/contract/codes";
import { retryable } from "../../lib/messaging/retry";

describe("renderError", () => {
	it("renders a business error with its code and status", () => {
		const out = renderError(bizError("SECKILL_SOLD_OUT"), "t1");
		expect(out).toMatchObject({ status: 409, body: { code: 60003, data: null, trace_id: "t1" }, unexpected: false });
	});

	it("renders a business error that crossed nodes as a plain object", () => {
		const remote = {
			name: "MoleculerClientError",
			message: "user not found",
			code: 404,
			type: "USER_NOT_FOUND",
			data: null
		};
		expect(renderError(remote, null)).toMatchObject({ status: 404, body: { code: 10001 } });
	});

	it("lists the bad fields of a validation error", () => {
		const err = new Errors.ValidationError("Parameters validation error!", "VALIDATION_ERROR", [
			{ type: "required", field: "username", message: "The 'username' field is required." }
		]);
		expect(renderError(err, null)).toMatchObject({
			status: 400,
			body: { code: 400, data: [{ field: "username", message: "The 'username' field is required." }] }
		});
	});

	it("maps overload and missing services to a retryable 503", () => {
		for (const err of [
			new Errors.RequestTimeoutError({ action: "a", nodeID: "n" }),
			new Errors.ServiceNotAvailableError({ action: "a" }),
			new Errors.QueueIsFullError({ action: "a" })
		]) {
			expect(renderError(err, null)).toMatchObject({ status: 503, body: { code: 503 } });
		}
	});

	it("maps a request rejected because its node vanished, and any other retryable error, to 503", () => {
		expect(
			renderError(new Errors.RequestRejectedError({ action: "stock.seckill", nodeID: "stock-2" }), null)
		).toMatchObject({ status: 503, body: { code: 503 } });
		expect(renderError({ name: "SomeNewRetryableError", message: "x", retryable: true }, null)).toMatchObject({
			status: 503,
			unexpected: false
		});
	});

	it("hides anything unknown behind a 500 that says nothing", () => {
		const err = Object.assign(new Error("ER_PARSE_ERROR near 'SELECT * FROM users'"), {
			name: "SequelizeDatabaseError"
		});
		const out = renderError(err, null);
		expect(out).toMatchObject({ status: 500, body: { code: 500, message: Codes.INTERNAL.message }, unexpected: true });
		expect(JSON.stringify(out.body)).not.toMatch(/SELECT/);
	});

	it("maps body-parser failures", () => {
		expect(renderError(new Errors.MoleculerError("too large", 413, "entity.too.large"), null).status).toBe(413);
		expect(renderError(new Errors.MoleculerError("bad", 400, "entity.parse.failed"), null)).toMatchObject({
			status: 400,
			body: { code: 400 }
		});
	});
});

describe("resultEnvelope", () => {
	it("renders a returned rejection byte for byte as renderError renders the thrown error", () => {
		const thrown = renderError(bizError("SECKILL_SOLD_OUT"), "t1");
		const out = resultEnvelope(rejection("SECKILL_SOLD_OUT"), "t1");
		expect(out.status).toBe(thrown.status);
		expect(JSON.stringify(out.body)).toBe(JSON.stringify(thrown.body));
	});

	it("wraps a result in the success envelope, null when there is none", () => {
		expect(resultEnvelope({ id: 1 }, "t1")).toEqual({
			status: 200,
			body: { code: 0, message: "success", data: { id: 1 }, trace_id: "t1" }
		});
		expect(JSON.stringify(resultEnvelope(undefined, null).body)).toBe(
			'{"code":0,"message":"success","data":null,"trace_id":null}'
		);
	});
});

describe("rejection", () => {
	it("is a shared frozen object per code, not an Error", () => {
		expect(rejection("SECKILL_SOLD_OUT")).toBe(rejection("SECKILL_SOLD_OUT"));
		expect(rejection("SECKILL_SOLD_OUT")).not.toBeInstanceOf(Error);
		expect(Object.isFrozen(rejection("SECKILL_ENDED"))).toBe(true);
	});
});

describe("retry check", () => {
	const lost = [
		new Errors.RequestTimeoutError({ action: "a", nodeID: "n" }),
		new Errors.RequestRejectedError({ action: "a", nodeID: "n" })
	];
	const neverRan = [new Errors.ServiceNotAvailableError({ action: "a" }), new Errors.QueueIsFullError({ action: "a" })];

	it("retries any retryable error of an ordinary action", () => {
		for (const err of [...lost, ...neverRan]) expect(retryable.call({}, err)).toBe(true);
		expect(retryable.call({}, bizError("SECKILL_SOLD_OUT"))).toBe(false);
	});

	it("retries an action marked onlyNeverRan only when the request cannot have run", () => {
		for (const err of lost) expect(retryable.call({ onlyNeverRan: true }, err)).toBe(false);
		for (const err of neverRan) expect(retryable.call({ onlyNeverRan: true }, err)).toBe(true);
	});
});
