/**
 * Money is DECIMAL in MySQL and integer cents in arithmetic: 19.99 * 3 in floating point is
 * 59.97000000000001, in cents it is 5997.
 */
export function toCents(amount: number | string): number {
	return Math.round(Number(amount) * 100);
}

export function fromCents(cents: number): number {
	return cents / 100;
}

/** The exact text MySQL stores for DECIMAL(…, 2). */
export function centsToDecimal(cents: number): string {
	const sign = cents < 0 ? "-" : "";
	const abs = Math.abs(cents);
	return `${sign}${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, "0")}`;
}

/** Two decimal places at most, stored exactly as DECIMAL(12,2). */
export function isMoney(value: number): boolean {
	return Math.abs(value * 100 - Math.round(value * 100)) < 1e-6;
}
