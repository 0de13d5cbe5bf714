import pino from "pino";
import pretty from "pino-pretty";
import type { Config, LogLevel } from "../../config";

/** Fields never written to a log, whatever object they appear in. */
export const REDACT_PATHS = [
	"password",
	"*.password",
	"password_hash",
	"*.password_hash",
	"token",
	"*.token",
	"authorization",
	"*.authorization",
	"headers.authorization",
	"*.headers.authorization",
	"secret",
	"*.secret",
	"jwt",
	"*.jwt"
];

export interface GomallLogging {
	root: pino.Logger;
	/** Options for Moleculer's Pino logger: every module logger is a child of `root`. */
	moleculerLogger: Record<string, unknown>;
	setLevel(level: LogLevel): void;
}

/**
 * One pino root per process. Moleculer asks for a child per module; we keep them so that a
 * SIGHUP can change the level of every logger already handed out.
 */
export function createLogging(cfg: Config["log"]): GomallLogging {
	const options: pino.LoggerOptions = {
		level: cfg.level,
		redact: { paths: REDACT_PATHS, censor: "[REDACTED]" },
		base: { pid: process.pid }
	};
	const stream =
		cfg.output === "file"
			? pino.destination({ dest: cfg.file, mkdir: true, sync: false })
			: cfg.format === "pretty"
				? pretty({
						colorize: process.stdout.isTTY,
						translateTime: "SYS:HH:MM:ss.l",
						ignore: "pid,hostname,ns,mod,svc,node",
						messageFormat: "{mod}: {msg}",
						singleLine: true
					})
				: pino.destination({ dest: 1, sync: false });
	const root = pino(options, stream);
	const children = new Set<pino.Logger>();

	return {
		root,
		moleculerLogger: {
			type: "Pino",
			options: {
				level: cfg.level,
				createLogger: (level: string, bindings: Record<string, unknown>) => {
					const child = root.child(
						{ ns: bindings.ns, mod: bindings.mod, svc: bindings.svc, node: bindings.nodeID },
						{ level }
					);
					children.add(child);
					return child;
				}
			}
		},
		setLevel(level) {
			root.level = level;
			for (const c of children) c.level = level;
		}
	};
}
