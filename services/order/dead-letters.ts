import { getConfig } from "../../config";
import { ATTEMPTS_HEADER, REASON_HEADER } from "../../lib/messaging/amqp";
import { bizError } from "../../lib/contract/errors";
import { CLOSE_ROUTING_KEY, names, SECKILL_ROUTING_KEY } from "../../lib/messaging/topology";
import { isSeckillOrderMessage } from "../../lib/domain/seckill";
import type { DlqName, OrderMethods, OrderThis } from "./types";

/** Operators' view of the dead-letter queues (the flash-sale and the close queue's): list, or replay. */
export const deadLetterMethods = {
	/**
	 * Lists (replay false) or re-publishes (replay true) what sits in a dead-letter queue.
	 * Listing takes the messages and hands them back unacknowledged, so nothing is lost.
	 */
	async deadLetters(this: OrderThis, queue: DlqName, limit: number, replay: boolean) {
		const conn = this.amqp.connection;
		if (!conn) throw bizError("UNAVAILABLE");
		const n = names(getConfig().namespace);
		const dlq = queue === "seckill" ? n.seckillDlq : n.closeDlq;
		const routingKey = queue === "seckill" ? SECKILL_ROUTING_KEY : CLOSE_ROUTING_KEY;
		const ch = await conn.createConfirmChannel();
		ch.on("error", () => undefined);
		const messages: unknown[] = [];
		let replayed = 0;
		let dropped = 0;
		try {
			// Only what is there now: a replayed message that fails again comes back behind
			// these and must not be taken a second time in the same call.
			const { messageCount } = await ch.checkQueue(dlq);
			for (let i = 0; i < Math.min(limit, messageCount); i++) {
				const msg = await ch.get(dlq, { noAck: false });
				if (!msg) break;
				let body: unknown = msg.content.toString();
				try {
					body = JSON.parse(String(body));
				} catch {
					// shown as text
				}
				const death = (msg.properties.headers?.["x-death"] as any[] | undefined)?.[0];
				const headers = msg.properties.headers ?? {};
				messages.push({
					message_id: msg.properties.messageId ?? null,
					body,
					reason: headers[REASON_HEADER] ?? death?.reason ?? null,
					attempts: headers[ATTEMPTS_HEADER] ?? null,
					from_queue: death?.queue ?? null
				});
				// A flash-sale dead letter goes back only while its reservation is still failed: the
				// operator may have released its unit meanwhile, and each is replayed once.
				if (replay && queue === "seckill" && isSeckillOrderMessage(body)) {
					const again = await this.broker.call("stock.replayFailed", {
						arming_id: body.arming_id,
						order_no: body.order_no,
						bucket: body.bucket
					});
					if (!again) {
						ch.ack(msg);
						dropped++;
						continue;
					}
				}
				if (replay) {
					ch.publish(n.orderExchange, routingKey, msg.content, {
						persistent: true,
						mandatory: true,
						messageId: msg.properties.messageId,
						contentType: "application/json"
					});
					await ch.waitForConfirms();
					ch.ack(msg);
					replayed++;
				}
			}
		} finally {
			// Closing returns every message we took and did not ack to the DLQ.
			await ch.close().catch(() => undefined);
		}
		return { queue: dlq, messages, replayed, dropped };
	}
} satisfies Partial<OrderMethods>;
