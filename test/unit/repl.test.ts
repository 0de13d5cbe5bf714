import { formatTable } from "../../bootstrap/repl";

describe("formatTable", () => {
	it("pads columns to their widest cell, right-aligns numbers and shows missing values as -", () => {
		const out = formatTable([
			{ node: "stock-1", served: 1200, sold_out: [3, 4], ok: true },
			{ node: "stock-10", served: 7, sold_out: [], ok: false, extra: null }
		]);
		expect(out.split("\n")).toEqual([
			"node      served  sold_out  ok   extra",
			"--------  ------  --------  ---  -----",
			"stock-1     1200  3,4       yes      -",
			"stock-10       7  -         no       -"
		]);
	});

	it("says (none) for no rows", () => {
		expect(formatTable([])).toBe("(none)");
	});
});
