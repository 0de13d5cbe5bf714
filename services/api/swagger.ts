import fs from "node:fs";
import path from "node:path";
import { bizError } from "../../lib/contract/errors";
import { ActionInfo, buildOpenApi } from "../../lib/http/openapi";
import { VERSION } from "./health";
import { API_ALIASES } from "./routes";
import type { ApiThis, Req, Res } from "./types";
import { UPLOAD_PATH, UPLOAD_ROUTES } from "./uploads";

const SWAGGER_DIR = path.dirname(require.resolve("swagger-ui-dist/package.json"));
/** The files of swagger-ui-dist the page needs; nothing else is served from that folder. */
const SWAGGER_FILES: Record<string, string> = {
	"swagger-ui.css": "text/css; charset=utf-8",
	"index.css": "text/css; charset=utf-8",
	"swagger-ui-bundle.js": "text/javascript; charset=utf-8",
	"swagger-ui-standalone-preset.js": "text/javascript; charset=utf-8",
	"favicon-32x32.png": "image/png",
	"favicon-16x16.png": "image/png"
};
/** Read once, on first request: the bundle is a few MB and never changes at run time. */
const swaggerCache = new Map<string, Buffer>();
const SWAGGER_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GoMall API</title>
<link rel="stylesheet" href="swagger-ui.css"><link rel="stylesheet" href="index.css">
<link rel="icon" type="image/png" href="favicon-32x32.png"></head>
<body><div id="swagger-ui"></div>
<script src="swagger-ui-bundle.js"></script><script src="swagger-ui-standalone-preset.js"></script>
<script src="swagger-initializer.js"></script></body></html>`;
const SWAGGER_INIT = `window.onload = function () {
  window.ui = SwaggerUIBundle({ url: "doc.json", dom_id: "#swagger-ui", deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout" });
};`;
/** Swagger UI needs its own scripts, styles and inline styles; still nothing from elsewhere. */
const SWAGGER_CSP =
	"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'";

export const swaggerAliases = {
	"GET /swagger/:file"(this: ApiThis, req: Req & { $params?: { file?: string } }, res: Res) {
		this.serveSwagger(req.$params?.file ?? "", res);
	}
};

export const swaggerMethods = {
	/** The OpenAPI document from the aliases and the params schemas of the actions now known. */
	openApiDocument(this: ApiThis) {
		const actions = new Map<string, ActionInfo>();
		for (const a of this.broker.registry.getActionList({ skipInternal: true, withEndpoints: false })) {
			actions.set(a.name, {
				params: a.action?.params,
				auth: a.action?.auth,
				idempotent: a.action?.idempotent,
				codes: a.action?.codes
			});
		}
		return buildOpenApi("/api", API_ALIASES, actions, VERSION, { base: UPLOAD_PATH, routes: UPLOAD_ROUTES });
	},

	serveSwagger(this: ApiThis, file: string, res: Res) {
		res.setHeader("Content-Security-Policy", SWAGGER_CSP);
		if (file === "doc.json") return this.sendJson(res, 200, this.openApiDocument());
		const send = (type: string, body: string | Buffer) => {
			res.writeHead(200, { "Content-Type": type, "Cache-Control": "public, max-age=3600" });
			res.end(body);
		};
		if (file === "index.html" || file === "") return send("text/html; charset=utf-8", SWAGGER_HTML);
		if (file === "swagger-initializer.js") return send("text/javascript; charset=utf-8", SWAGGER_INIT);
		const type = SWAGGER_FILES[file];
		if (!type) return this.sendError({} as Req, res, bizError("NOT_FOUND"));
		let body = swaggerCache.get(file);
		if (!body) swaggerCache.set(file, (body = fs.readFileSync(path.join(SWAGGER_DIR, file))));
		send(type, body);
	}
} satisfies Partial<ApiThis>;
