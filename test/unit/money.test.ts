import { centsToDecimal, fromCents, toCents } from "../../lib/domain/money";

describe("money", () => {
	it("does arithmetic in integer cents", () => {
		expect(toCents("19.99") * 3).toBe(5997);
		expect(fromCents(toCents(0.1) + toCents(0.2))).toBe(0.3);
		expect(centsToDecimal(5997)).toBe("59.97");
		expect(centsToDecimal(5)).toBe("0.05");
		expect(centsToDecimal(999999999999)).toBe("9999999999.99");
	});
});
