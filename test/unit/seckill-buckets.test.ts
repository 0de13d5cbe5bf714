import {
	bucketKeys,
	bucketShare,
	chooseBucketTags,
	formatBucketTags,
	homeBucket,
	ONE_BUCKET,
	parseBucketTags
} from "../../lib/domain/seckill-buckets";
import { activityKeys, isSeckillOrderMessage } from "../../lib/domain/seckill";

const ARMING = "0123456789abcdef0123456789abcdef";

it("puts every buyer in one stable home bucket, spread evenly over consecutive ids", () => {
	expect(homeBucket(12345, 1)).toBe(0);
	expect(homeBucket(12345, 6)).toBe(homeBucket(12345, 6));
	const per = [0, 0, 0, 0, 0, 0];
	for (let id = 1; id <= 60000; id++) {
		per[homeBucket(id, 6)]++;
	}
	for (const n of per) expect(Math.abs(n - 10000)).toBeLessThan(500);
});

it("splits the stock evenly, the remainder to the first buckets", () => {
	expect([0, 1, 2, 3].map(i => bucketShare(10, 4, i))).toEqual([3, 3, 2, 2]);
	expect([0, 1, 2].map(i => bucketShare(2, 3, i))).toEqual([1, 1, 0]);
});

it("keeps bucket 0 on the arming's own keys and gives the others tags of their own", () => {
	expect(chooseBucketTags({} as never, ARMING, 1)).toBe(ONE_BUCKET);
	const tags = chooseBucketTags({} as never, ARMING, 4);
	expect(tags).toEqual(["", "1", "2", "3"]);
	expect(bucketKeys(ARMING, tags, 0)).toEqual(activityKeys(ARMING));
	expect(bucketKeys(ARMING, tags, 2).info).toBe(`seckill:{sk:${ARMING}:2}:info`);
	expect(parseBucketTags(4, formatBucketTags(tags))).toEqual(tags);
	expect(parseBucketTags(1, "")).toBe(ONE_BUCKET);
	expect(parseBucketTags(null, null)).toBe(ONE_BUCKET);
});

it("accepts an order message with or without its bucket", () => {
	const m = {
		order_no: "1",
		activity_id: 1,
		arming_id: ARMING,
		product_id: 1,
		user_id: 1,
		seq: 1,
		product_name: "p",
		product_image: "",
		price: "1.00"
	};
	expect(isSeckillOrderMessage(m)).toBe(true);
	expect(isSeckillOrderMessage({ ...m, bucket: 3 })).toBe(true);
	expect(isSeckillOrderMessage({ ...m, bucket: -1 })).toBe(false);
	expect(isSeckillOrderMessage({ ...m, bucket: "3" })).toBe(false);
});
