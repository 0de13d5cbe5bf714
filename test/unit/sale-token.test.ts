import {
	captchaAnswerHash,
	captchaKey,
	makeSaleToken,
	SALE_TOKEN_MAX_LENGTH,
	saleTokenKey,
	verifySaleToken
} from "../../lib/domain/sale-token";

const key = saleTokenKey("unit-test-secret");
const claims = { userId: 42, arming: "0123456789abcdef0123456789abcdef", productId: 7 };
const now = 1_800_000_000_000;

describe("sale tokens", () => {
	const token = makeSaleToken(key, claims, now + 60_000);

	it("verify for the buyer, arming and product they were made for, until their expiry", () => {
		expect(token.length).toBeLessThanOrEqual(SALE_TOKEN_MAX_LENGTH);
		const r = verifySaleToken(key, token, claims, now);
		expect(r).toEqual({ ok: true, nonce: expect.stringMatching(/^[A-Za-z0-9_-]{22}$/), expiresAt: now + 60_000 });
		expect(verifySaleToken(key, token, claims, now + 59_999).ok).toBe(true);
		expect(verifySaleToken(key, token, claims, now + 60_000)).toEqual({ ok: false, reason: "expired" });
	});

	it("carry a fresh nonce each (single use is keyed on it)", () => {
		const nonces = new Set(
			Array.from({ length: 100 }, () => {
				const r = verifySaleToken(key, makeSaleToken(key, claims, now + 1000), claims, now);
				return r.ok ? r.nonce : "";
			})
		);
		expect(nonces.size).toBe(100);
	});

	it.each([
		["another user", { ...claims, userId: 43 }],
		["another arming", { ...claims, arming: "f".repeat(32) }],
		["another product", { ...claims, productId: 8 }]
	])("fail the MAC for %s", (_, other) => {
		expect(verifySaleToken(key, token, other, now)).toEqual({ ok: false, reason: "mac" });
	});

	it("fail under another secret's key", () => {
		expect(verifySaleToken(saleTokenKey("another-secret"), token, claims, now)).toEqual({ ok: false, reason: "mac" });
	});

	it("refuse any tampering: a later expiry, another nonce, a changed MAC, another spelling of the MAC", () => {
		const [exp, nonce, mac] = token.split(".");
		expect(verifySaleToken(key, `${Number(exp) + 3_600_000}.${nonce}.${mac}`, claims, now).ok).toBe(false);
		const otherNonce = (nonce[0] === "A" ? "B" : "A") + nonce.slice(1);
		expect(verifySaleToken(key, `${exp}.${otherNonce}.${mac}`, claims, now).ok).toBe(false);
		const flipped = mac.slice(0, 10) + (mac[10] === "A" ? "B" : "A") + mac.slice(11);
		expect(verifySaleToken(key, `${exp}.${nonce}.${flipped}`, claims, now)).toEqual({ ok: false, reason: "mac" });
		// The last of 43 base64url characters carries 4 bits: its 3 other spellings decode to the same
		// bytes, and must not verify (one token, one text).
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
		const last = alphabet.indexOf(mac[42]);
		for (let low = 1; low < 4; low++) {
			const twin = mac.slice(0, 42) + alphabet[last ^ low];
			expect(Buffer.from(twin, "base64url")).toEqual(Buffer.from(mac, "base64url"));
			expect(verifySaleToken(key, `${exp}.${nonce}.${twin}`, claims, now).ok).toBe(false);
		}
	});

	it.each([[undefined], [""], ["abc"], [123], ["1.2.3"], [`${"9".repeat(200)}`], [token + "x"]])(
		"call bad input #%# malformed",
		bad => {
			expect(verifySaleToken(key, bad, claims, now)).toEqual({ ok: false, reason: "malformed" });
		}
	);

	it("keep captcha answers keyed and bound to their id, buyer and product", () => {
		const ck = captchaKey("unit-test-secret");
		const h = captchaAnswerHash(ck, "id1", 42, 7, "12");
		expect(captchaAnswerHash(ck, "id1", 42, 7, " 12 ")).toBe(h);
		expect(captchaAnswerHash(ck, "id1", 42, 7, "13")).not.toBe(h);
		expect(captchaAnswerHash(ck, "id2", 42, 7, "12")).not.toBe(h);
		expect(captchaAnswerHash(ck, "id1", 43, 7, "12")).not.toBe(h);
		expect(captchaAnswerHash(ck, "id1", 42, 8, "12")).not.toBe(h);
		expect(captchaAnswerHash(captchaKey("other"), "id1", 42, 7, "12")).not.toBe(h);
		// Not the token key: a captcha hash is never a token's MAC.
		expect(ck.equals(key)).toBe(false);
	});
});
