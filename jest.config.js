/** Tests talk to the real MariaDB, Redis, RabbitMQ and NATS on 127.0.0.1 (see README). */
module.exports = {
	testEnvironment: "node",
	// Transpiled only (tsconfig's isolatedModules): `npm run lint` type-checks the whole tree once.
	transform: { "^.+\\.ts$": ["ts-jest", { tsconfig: "tsconfig.json" }] },
	testMatch: ["<rootDir>/test/**/*.test.ts"],
	moduleFileExtensions: ["ts", "js", "json"],
	testTimeout: 60000,
	modulePathIgnorePatterns: ["<rootDir>/dist/"],
	// A failed test can leave a connection open; CI must end with the verdict, not hang.
	forceExit: true
};
