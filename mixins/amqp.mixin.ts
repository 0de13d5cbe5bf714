import type { Service, ServiceSchema } from "moleculer";
import { getConfig } from "../config";
import { AmqpConnection } from "../lib/amqp";

export interface AmqpThis {
	amqp: AmqpConnection;
}

/**
 * A RabbitMQ connection per service that reconnects by itself. The service registers its
 * topology, publishers and consumers with `this.amqp.onConnect` / ConfirmPublisher / consume
 * in `created`; the connection opens when the service starts and closes when it stops.
 */
export function AmqpMixin(connectionName: string): Partial<ServiceSchema> {
	return {
		created(this: Service & Record<string, any>) {
			this.amqp = new AmqpConnection(getConfig().amqp.url, this.logger, connectionName);
		},
		async started(this: Service & Record<string, any>) {
			await this.amqp.start();
		},
		async stopped(this: Service & Record<string, any>) {
			await this.amqp.stop();
		}
	};
}
