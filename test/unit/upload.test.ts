import {
	isMultipart,
	overQuota,
	quotaDay,
	quotaKey,
	secondsToNextDay,
	sniffImage,
	STORED_NAME,
	storedType,
	uploadFailure
} from "../../lib/domain/upload";
import { bizError } from "../../lib/contract/errors";

const hex = (s: string) => Buffer.from(s.replace(/\s/g, ""), "hex");

describe("sniffImage", () => {
	it("knows the four formats by their first bytes", () => {
		expect(sniffImage(hex("89504e470d0a1a0a 0000000d"))?.contentType).toBe("image/png");
		expect(sniffImage(hex("ffd8ffe0 00104a46 49460001"))?.contentType).toBe("image/jpeg");
		expect(sniffImage(Buffer.from("GIF89a\x01\x00\x01\x00\x00\x00", "latin1"))?.contentType).toBe("image/gif");
		expect(sniffImage(Buffer.from("GIF87a\x01\x00\x01\x00\x00\x00", "latin1"))?.ext).toBe("gif");
		expect(sniffImage(Buffer.from("RIFF\x24\x00\x00\x00WEBPVP8 ", "latin1"))?.contentType).toBe("image/webp");
	});

	it("refuses everything else, whatever it is called", () => {
		for (const s of [
			"#!/bin/sh\nrm -rf /",
			"<svg xmlns='http://www.w3.org/2000/svg'/>",
			"<html><script>",
			"RIFF\x24\x00\x00\x00WAVEfmt ",
			"GIF88a......",
			"\x89PNG\r\n",
			""
		]) {
			expect(sniffImage(Buffer.from(s, "latin1"))).toBeNull();
		}
	});
});

describe("stored names", () => {
	it("match only 32 hex digits and a known extension", () => {
		expect(storedType(`${"a".repeat(32)}.png`)?.contentType).toBe("image/png");
		expect(storedType(`${"0".repeat(32)}.jpg`)?.contentType).toBe("image/jpeg");
		for (const bad of [
			"../package.json",
			`${"a".repeat(32)}.svg`,
			`${"A".repeat(32)}.png`,
			`.${"a".repeat(32)}.png`,
			`${"a".repeat(32)}.png/x`,
			`${"a".repeat(31)}.png`,
			`${"a".repeat(32)}.png\n`
		]) {
			expect([bad, STORED_NAME.test(bad), storedType(bad)]).toEqual([bad, false, null]);
		}
	});
});

describe("isMultipart", () => {
	it("wants multipart/form-data with a boundary", () => {
		expect(isMultipart("multipart/form-data; boundary=----x")).toBe(true);
		expect(isMultipart('Multipart/Form-Data; charset=utf-8; boundary="a b"')).toBe(true);
		for (const bad of [
			undefined,
			"",
			"multipart/form-data",
			"multipart/form-data;",
			"multipart/mixed; boundary=x",
			"application/json",
			"image/png"
		])
			expect(isMultipart(bad)).toBe(false);
	});
});

describe("uploadFailure", () => {
	it("turns moleculer-web's and busboy's errors into upload codes and leaves the rest alone", () => {
		const type = (e: unknown) => (e as { type?: string }).type;
		expect(
			type(
				uploadFailure(
					Object.assign(new Error("Payload too large"), { name: "PayloadTooLarge", type: "PAYLOAD_TOO_LARGE" })
				)
			)
		).toBe("UPLOAD_TOO_LARGE");
		expect(
			type(uploadFailure(Object.assign(new Error("File missing in the request"), { name: "MoleculerClientError" })))
		).toBe("UPLOAD_NO_FILE");
		expect(type(uploadFailure(new Error("Unexpected end of multipart data")))).toBe("UPLOAD_MALFORMED");
		const biz = bizError("UPLOAD_NOT_IMAGE");
		expect(uploadFailure(biz)).toBe(biz);
		const timeout = Object.assign(new Error("timeout"), { name: "RequestTimeoutError" });
		expect(uploadFailure(timeout)).toBe(timeout);
		const bug = new TypeError("x is undefined");
		expect(uploadFailure(bug)).toBe(bug);
	});
});

describe("the upload quota's day", () => {
	it("is the UTC day, keyed by user with a Redis Cluster hash tag", () => {
		const t = Date.UTC(2025, 2, 9, 23, 59, 30);
		expect(quotaDay(t)).toBe("2025-03-09");
		expect(quotaDay(t + 30_000)).toBe("2025-03-10");
		expect(quotaKey(42, quotaDay(t))).toBe("upload:quota:{u42}:2025-03-09");
	});

	it("ends at the next UTC midnight: at least a second to wait, at most a day", () => {
		expect(secondsToNextDay(Date.UTC(2025, 2, 9, 23, 59, 30))).toBe(30);
		expect(secondsToNextDay(Date.UTC(2025, 2, 9, 23, 59, 59, 500))).toBe(1);
		expect(secondsToNextDay(Date.UTC(2025, 2, 10))).toBe(86400);
	});

	it("names the limit a request would pass, files first; 0 is no limit", () => {
		const limits = { files: 3, bytes: 100 };
		expect(overQuota({ files: 2, bytes: 50 }, { files: 1, bytes: 50 }, limits)).toBeNull();
		expect(overQuota({ files: 3, bytes: 0 }, { files: 1, bytes: 1 }, limits)).toBe("files");
		expect(overQuota({ files: 0, bytes: 99 }, { files: 1, bytes: 2 }, limits)).toBe("bytes");
		expect(overQuota({ files: 9, bytes: 999 }, { files: 1, bytes: 1 }, limits)).toBe("files");
		expect(overQuota({ files: 9, bytes: 999 }, { files: 1, bytes: 1 }, { files: 0, bytes: 0 })).toBeNull();
		// Nothing to add: refused only once a limit is reached (the check before a request's body is read).
		expect(overQuota({ files: 3, bytes: 0 }, { files: 0, bytes: 0 }, limits)).toBe("files");
		expect(overQuota({ files: 2, bytes: 100 }, { files: 0, bytes: 0 }, limits)).toBe("bytes");
		expect(overQuota({ files: 2, bytes: 99 }, { files: 0, bytes: 0 }, limits)).toBeNull();
	});
});
