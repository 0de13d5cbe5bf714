import type { Service, ServiceSchema } from "moleculer";
import { getConfig } from "../config";
import { AmqpConnection } from "../lib/messaging/amqp";

export interface AmqpThis {
	amqp: AmqpConnection;
}

/**
 * A RabbitMQ connection per service that reconnects by itself. The service registers its
 * topology, publishers and consumers (ConfirmPublisher, QueueConsumer) in `created`, and
 * calls `await this.amqp.start()` last in its own `started`: consumers must not receive a
 * message before the database and Redis they write to are connected (Moleculer runs the
 * mixins' `started` handlers in an order the mixin cannot choose). It closes on stop.
 */
export function AmqpMixin(connectionName: string): Partial<ServiceSchema> {
	return {
		created(this: Service & Record<string, any>) {
			this.amqp = new AmqpConnection(getConfig().amqp.url, this.logger, connectionName);
		},
		async stopped(this: Service & Record<string, any>) {
			await this.amqp.stop();
		}
	};
}
