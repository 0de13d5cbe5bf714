/**
 * Deepest page a list serves. Beyond it the SQL offset would overflow (page=1e20 is an
 * integer to the validator), and no one pages a million rows deep: search narrows instead.
 */
export const MAX_PAGE = 100_000;

/** SPEC paging: `page` from 1, `page_size` default 10 and at most 100. */
export const pageParams = {
	page: { type: "number", integer: true, positive: true, max: MAX_PAGE, convert: true, default: 1 },
	page_size: { type: "number", integer: true, min: 1, max: 100, convert: true, default: 10 }
};

export interface Paged<T> {
	list: T[];
	total: number;
	page: number;
	page_size: number;
	total_page: number;
}

export function paged<T>(list: T[], total: number, page: number, pageSize: number): Paged<T> {
	return { list, total, page, page_size: pageSize, total_page: Math.ceil(total / pageSize) };
}
