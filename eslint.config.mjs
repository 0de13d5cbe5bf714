import js from "@eslint/js";
import tseslint from "typescript-eslint";

/**
 * Imports run downward only: scripts and bootstrap (the composition root) -> services ->
 * mixins -> lib -> config. Inside lib, each folder may import its own files and the folders
 * below it in LIB_LAYERS, never one above. Every relative import is checked against the
 * folder of the file it is written in.
 */
const LIB_LAYERS = ["contract", "observability", "storage", "auth", "messaging", "domain", "http"];
const ABOVE_LIB = ["services", "mixins", "bootstrap", "scripts", "moleculer\\.config"];

/** A `no-restricted-imports` pattern refusing any relative import that reaches one of `names`. */
const refuse = (names, why) => ({
	regex: `^\\.{1,2}/(?:\\.\\./)*(?:lib/)?(?:${names.join("|")})(?:/|$)`,
	message: why
});

const boundaries = [
	{
		files: ["config/**/*.ts"],
		patterns: [refuse(["lib", ...ABOVE_LIB], "config is the bottom layer: it imports nothing of the project")]
	},
	...LIB_LAYERS.map((layer, i) => ({
		files: [`lib/${layer}/**/*.ts`],
		patterns: [
			refuse(ABOVE_LIB, "lib never imports services, mixins, the composition root or moleculer.config"),
			...(i < LIB_LAYERS.length - 1
				? [
						refuse(
							LIB_LAYERS.slice(i + 1),
							`lib/${layer} may import only ${LIB_LAYERS.slice(0, i).join(", ") || "config"} below it`
						)
					]
				: [])
		]
	})),
	{
		files: ["mixins/**/*.ts"],
		patterns: [
			refuse(
				["services", "bootstrap", "scripts", "moleculer\\.config"],
				"mixins sit below services and the composition root"
			)
		]
	},
	{
		files: ["services/**/*.ts"],
		patterns: [
			refuse(
				["bootstrap", "scripts", "moleculer\\.config"],
				"services never import the composition root or moleculer.config"
			),
			// One actor reaches another through ctx.call; what two actors share lives in lib/domain.
			{
				regex: "^\\.\\./(?:\\.\\./)*services/|^\\./[a-z-]+\\.service$|^\\.\\./[a-z-]+\\.service$",
				message: "an actor never imports another actor: share through lib/domain, call through ctx.call"
			}
		]
	}
].map(({ files, patterns }) => ({ files, rules: { "no-restricted-imports": ["error", { patterns }] } }));

export default tseslint.config(
	{ ignores: ["dist/", "dist-bench/", "node_modules/", "coverage/", "*.js", "*.mjs"] },
	js.configs.recommended,
	...tseslint.configs.recommended,
	{
		rules: {
			"@typescript-eslint/no-explicit-any": "off",
			"@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_" }]
		}
	},
	...boundaries
);
