import { getConfig } from "../../config";
import type { GomallPrometheusReporter } from "../../lib/observability/prometheus-reporter";
import { requestMs } from "./responses";
import type { ApiThis, Req, Res } from "./types";

/** The one route label of every request that matched no alias. */
const UNMATCHED = "unmatched";

export const metricsAliases = {
	"GET /metrics"(this: ApiThis, _req: Req, res: Res) {
		const reporter = this.broker.metrics.reporter.find(
			(r): r is GomallPrometheusReporter =>
				typeof (r as GomallPrometheusReporter).generatePrometheusResponse === "function"
		);
		this.turnMetrics.flush();
		res.writeHead(200, { "Content-Type": "text/plain; version=0.0.4; charset=utf-8" });
		res.end(reporter ? reporter.generatePrometheusResponse() : "");
	}
};

export const observeMethods = {
	/** One metric sample (handed to the registry per turn) and one log line per request, once the response is sent. */
	observe(this: ApiThis, req: Req, res: Res): void {
		const route = this.routeLabel(req);
		const method = req.method ?? "";
		const status = res.statusCode;
		const key = `${method} ${route} ${status}`;
		const labels = () => ({ method, route, status });
		const seconds = requestMs(req) / 1000;
		this.turnMetrics.increment("gomall_http_requests_total", key, labels);
		this.turnMetrics.observe("gomall_http_request_duration_seconds", key, labels, seconds);
		if (getConfig().log.requests) {
			const ctx = req.$ctx;
			// Never the headers, the body or the query: they hold tokens and passwords.
			this.logger.info(
				`${req.method} ${route} ${res.statusCode} ${(seconds * 1000).toFixed(1)}ms trace_id=${req.$traceId ?? ctx?.requestID ?? "-"} user_id=${req.$userId ?? ctx?.meta.user?.id ?? "-"} ip=${req.$clientIp ?? req.socket.remoteAddress ?? "-"}`
			);
		}
	},

	/**
	 * The route a request is counted and logged under: its alias' pattern (`/api/product/:id`,
	 * `/health`, `/swagger/:file`, `/uploads/:name`), never the raw URL, which the client picks:
	 * each distinct label is a counter and a histogram kept for the process' life. A request
	 * refused before its alias was recorded (a malformed or oversized body) is looked up by its
	 * path; one that matches no alias, under /api or not, is "unmatched".
	 */
	routeLabel(this: ApiThis, req: Req): string {
		if (req.$alias?.fullPath) return req.$alias.fullPath;
		if (req.parsedUrl === undefined || !req.method) return UNMATCHED;
		const found = this.resolveAlias(req.parsedUrl, req.method);
		return (found && found.alias.fullPath) || UNMATCHED;
	}
} satisfies Partial<ApiThis>;
