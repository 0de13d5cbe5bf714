/** A product's status (SPEC): on shelf or off shelf. */
export const PRODUCT_ON_SHELF = 1;
export const PRODUCT_OFF_SHELF = 0;

export interface Product {
	id: number;
	name: string;
	description: string;
	price: number;
	stock: number;
	category: string;
	image_url: string;
	status: number;
	created_at: Date;
	updated_at: Date;
}
