import type { Context, Service, ServiceSchema, ServiceSettingSchema } from "moleculer";
import bcrypt from "bcrypt";
import { DataTypes, QueryTypes, Transaction, UniqueConstraintError } from "sequelize";
import { getConfig } from "../config";
import { bizError } from "../lib/contract/errors";
import { AuthUser, ROLE_ADMIN, ROLE_USER, TokenService } from "../lib/auth/jwt";
import { callEachNode } from "../lib/messaging/each-node";
import { counter, labelSets } from "../lib/observability/metrics";
import { hashRefreshToken, newRefreshToken, newSessionId, refusedUntil, RevokedSession } from "../lib/auth/sessions";
import { inTransaction } from "../lib/storage/tx";
import { DbMixin, DbThis } from "../mixins/db.mixin";

export interface PublicUser {
	id: number;
	username: string;
	email: string | null;
	phone: string | null;
	role: number;
	created_at: Date;
}

interface UserRow {
	id: number;
	username: string;
	password_hash: string;
	email: string | null;
	phone: string | null;
	role: number;
	status: number;
	created_at: Date;
}

/** The least a resync reaches back before the newest revocation its gateway holds (seconds). */
const RESYNC_MARGIN_S = 60;

const USER_ACTIVE = 1;
const USER_DISABLED = 0;

/** The register rules for a new password: bcrypt reads at most 72 bytes. */
const NEW_PASSWORD = { type: "string", min: 8, max: 72 };

const credentials = {
	username: {
		type: "string",
		pattern: /^[A-Za-z0-9_]{3,32}$/,
		messages: { stringPattern: "username must be 3-32 letters, digits or _" }
	},
	password: NEW_PASSWORD
};

/** What login, register and refresh answer: the access token (as before) and the session's refresh token. */
export interface Tokens {
	token: string;
	refresh_token: string;
	/** seconds the access token lives */
	expires_in: number;
}

/** Why sessions end (user_sessions.revoke_reason, the reason label of gomall_user_sessions_revoked_total). */
const REVOKE_REASONS = ["logout", "reuse", "password", "role", "disabled", "enabled"] as const;
type RevokeReason = (typeof REVOKE_REASONS)[number];

/** What an admin sees of a user: the public fields and whether the account is active. */
export interface AdminUser extends PublicUser {
	status: number;
}

interface UserThis extends Service, DbThis {
	tokens: TokenService;
	/**
	 * Compared against when the username is unknown, so both failures take as long: made at
	 * start with the configured cost, since bcrypt's time is set by the cost in the hash.
	 */
	unknownUserHash: string;
	toPublic(row: Omit<UserRow, "password_hash">): PublicUser;
	register(p: {
		username: string;
		password: string;
		email?: string;
		phone?: string;
	}): Promise<Tokens & { user: PublicUser }>;
	login(username: string, password: string): Promise<Tokens & { user: PublicUser }>;
	ensureAdmin(): Promise<void>;
	openSession(user: PublicUser): Promise<Tokens & { user: PublicUser }>;
	tokensFor(user: Pick<AuthUser, "id" | "role">, sid: string, refreshToken: string): Tokens;
	issueRefreshToken(sid: string, t: Transaction): Promise<string>;
	refresh(refreshToken: string): Promise<Tokens>;
	logout(user: AuthUser): Promise<void>;
	changePassword(user: AuthUser, oldPassword: string, newPassword: string): Promise<void>;
	updateUser(admin: AuthUser, id: number, change: { role?: number; status?: number }): Promise<AdminUser>;
	revokeSessions(
		where: string,
		replacements: unknown[],
		reason: RevokeReason,
		t: Transaction
	): Promise<RevokedSession[]>;
	announceRevoked(sessions: RevokedSession[]): Promise<void>;
	revokedSessions(since?: number): Promise<RevokedSession[]>;
	purgeSessions(): Promise<{ tokens: number; sessions: number }>;
	purgeTimer: NodeJS.Timeout;
}

/**
 * The user actor: accounts, bcrypt passwords, sessions and their tokens. The hash never leaves
 * this actor. A login opens a session: short-lived access tokens (JWTs carrying the session id)
 * and a refresh token that rotates on use. Ending a session (logout, a reused refresh token, a
 * password change, an admin changing the user's role or disabling the account) is told to every
 * gateway, which refuses the session's access tokens from memory (lib/sessions RevokedSessions)
 * until they would have expired anyway.
 */
const UserService: ServiceSchema<ServiceSettingSchema, Record<string, any>, Record<string, any>, UserThis> = {
	name: "user",
	mixins: [
		DbMixin({
			name: "user",
			define: {
				id: { type: DataTypes.BIGINT.UNSIGNED, primaryKey: true, autoIncrement: true },
				username: DataTypes.STRING(32),
				password_hash: DataTypes.STRING(100),
				email: DataTypes.STRING(128),
				phone: DataTypes.STRING(20),
				role: DataTypes.TINYINT,
				status: DataTypes.TINYINT,
				created_at: DataTypes.DATE(3),
				updated_at: DataTypes.DATE(3)
			},
			options: { tableName: "users", timestamps: false }
		})
	],

	actions: {
		register: {
			retryPolicy: { enabled: false },
			params: {
				$$strict: "remove",
				...credentials,
				email: { type: "email", max: 128, optional: true },
				phone: {
					type: "string",
					pattern: /^\+?[0-9]{6,20}$/,
					optional: true,
					messages: { stringPattern: "phone must be 6-20 digits, optionally starting with +" }
				}
			},
			handler(this: UserThis, ctx: Context<{ username: string; password: string; email?: string; phone?: string }>) {
				return this.register(ctx.params);
			}
		},

		login: {
			params: { $$strict: "remove", ...credentials, password: { type: "string", min: 1, max: 72 } },
			handler(this: UserThis, ctx: Context<{ username: string; password: string }>) {
				return this.login(ctx.params.username, ctx.params.password);
			}
		},

		profile: {
			auth: "user",
			async handler(this: UserThis, ctx: Context<unknown, { user: AuthUser }>) {
				const row = (await this.model.findByPk(ctx.meta.user.id, { raw: true })) as UserRow | null;
				if (!row) throw bizError("USER_NOT_FOUND");
				return this.toPublic(row);
			}
		},

		refresh: {
			retryPolicy: { enabled: false },
			params: { $$strict: "remove", refresh_token: { type: "string", min: 1, max: 200 } },
			handler(this: UserThis, ctx: Context<{ refresh_token: string }>) {
				return this.refresh(ctx.params.refresh_token);
			}
		},

		logout: {
			auth: "user",
			retryPolicy: { enabled: false },
			async handler(this: UserThis, ctx: Context<unknown, { user: AuthUser }>) {
				await this.logout(ctx.meta.user);
				return null;
			}
		},

		changePassword: {
			auth: "user",
			retryPolicy: { enabled: false },
			params: { $$strict: "remove", old_password: { type: "string", min: 1, max: 72 }, new_password: NEW_PASSWORD },
			async handler(this: UserThis, ctx: Context<{ old_password: string; new_password: string }, { user: AuthUser }>) {
				await this.changePassword(ctx.meta.user, ctx.params.old_password, ctx.params.new_password);
				return null;
			}
		},

		/**
		 * PUT /api/user/:id (admin): a user's role and/or status. A change ends every session of the
		 * user at once (on every gateway, before this answers): a demoted admin's tokens stop being
		 * an admin's, a disabled user's stop working; they log in again (a disabled one cannot).
		 */
		update: {
			auth: "admin",
			retryPolicy: { enabled: false },
			params: {
				$$strict: "remove",
				id: { type: "number", integer: true, positive: true, convert: true },
				role: { type: "enum", values: [ROLE_USER, ROLE_ADMIN], optional: true },
				status: { type: "enum", values: [USER_DISABLED, USER_ACTIVE], optional: true }
			},
			handler(this: UserThis, ctx: Context<{ id: number; role?: number; status?: number }, { user: AuthUser }>) {
				const { id, role, status } = ctx.params;
				return this.updateUser(ctx.meta.user, id, { role, status });
			}
		},

		/**
		 * Internal: the sessions ended recently enough that their access tokens may still be
		 * unexpired: all of them at a gateway's start, and those ended since about `since` (Unix
		 * seconds, the newest `revoked` the gateway holds) at its resyncs.
		 */
		revokedSessions: {
			visibility: "public",
			params: { since: { type: "number", integer: true, min: 0, optional: true } },
			handler(this: UserThis, ctx: Context<{ since?: number }>) {
				return this.revokedSessions(ctx.params.since);
			}
		},

		/** Internal: another actor resolving a user id. */
		get: {
			visibility: "public",
			params: { id: { type: "number", integer: true, positive: true, convert: true } },
			async handler(this: UserThis, ctx: Context<{ id: number }>) {
				const row = (await this.model.findByPk(ctx.params.id, { raw: true })) as UserRow | null;
				if (!row) throw bizError("USER_NOT_FOUND");
				return this.toPublic(row);
			}
		}
	},

	methods: {
		toPublic(row: Omit<UserRow, "password_hash">): PublicUser {
			return {
				id: Number(row.id),
				username: row.username,
				email: row.email,
				phone: row.phone,
				role: row.role,
				created_at: row.created_at
			};
		},

		async register(this: UserThis, p) {
			const hash = await bcrypt.hash(p.password, getConfig().bcrypt.cost);
			let row: UserRow;
			try {
				const created = await this.model.create({
					username: p.username,
					password_hash: hash,
					email: p.email ?? null,
					phone: p.phone ?? null,
					role: ROLE_USER,
					status: USER_ACTIVE
				});
				row = (await this.model.findByPk(created.get("id") as number, { raw: true })) as unknown as UserRow;
			} catch (err) {
				// The unique keys decide between concurrent registrations; the losers get 409.
				if (err instanceof UniqueConstraintError) throw bizError("USER_ALREADY_EXISTS");
				throw err;
			}
			const user = this.toPublic(row);
			return this.openSession(user);
		},

		async login(this: UserThis, username: string, password: string) {
			const row = (await this.model.findOne({ where: { username }, raw: true })) as UserRow | null;
			const ok = await bcrypt.compare(password, row ? row.password_hash : this.unknownUserHash);
			// A disabled account is refused whatever the password: its answer never confirms a guess.
			const disabled = row !== null && row.status !== USER_ACTIVE;
			const result = disabled ? "disabled" : row && ok ? "success" : "wrong_password";
			this.broker.metrics.increment("gomall_user_logins_total", { result });
			if (disabled) throw bizError("USER_DISABLED");
			if (!row || !ok) throw bizError("USER_WRONG_PASSWORD");
			const user = this.toPublic(row);
			return this.openSession(user);
		},

		/**
		 * A new session and its first tokens, for the user as it is now: under a shared lock of the
		 * user's row, so an admin's role change or disabling (updateUser, which locks it for update)
		 * comes either after this session exists, and ends it, or before, and is seen here.
		 */
		async openSession(this: UserThis, user: PublicUser) {
			const db = this.adapter.db;
			const sid = newSessionId();
			const { refreshToken, role } = await inTransaction(db, async t => {
				const [now] = (await db.query("SELECT role, status FROM users WHERE id = ? LOCK IN SHARE MODE", {
					replacements: [user.id],
					transaction: t,
					type: QueryTypes.SELECT
				})) as { role: number; status: number }[];
				if (!now) throw bizError("USER_NOT_FOUND");
				if (now.status !== USER_ACTIVE) throw bizError("USER_DISABLED");
				await db.query("INSERT INTO user_sessions (id, user_id) VALUES (?, ?)", {
					replacements: [sid, user.id],
					transaction: t,
					type: QueryTypes.INSERT
				});
				return { refreshToken: await this.issueRefreshToken(sid, t), role: now.role };
			});
			const current = { ...user, role };
			return { ...this.tokensFor(current, sid, refreshToken), user: current };
		},

		/** Every access token names its session: the one way a token can be ended before it expires. */
		tokensFor(this: UserThis, user: Pick<AuthUser, "id" | "role">, sid: string, refreshToken: string): Tokens {
			return {
				token: this.tokens.sign(user, sid),
				refresh_token: refreshToken,
				expires_in: getConfig().jwt.expires_in
			};
		},

		async issueRefreshToken(this: UserThis, sid: string, t: Transaction) {
			const { token, hash } = newRefreshToken();
			await this.adapter.db.query(
				"INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES (?, ?, NOW(3) + INTERVAL ? SECOND)",
				{
					replacements: [hash, sid, getConfig().jwt.refresh_expires_in],
					transaction: t,
					type: QueryTypes.INSERT
				}
			);
			return token;
		},

		/**
		 * Rotation: the token presented is marked used and a new one issued, in one transaction
		 * that locks the presented token's row, so of two refreshes racing with one token only one
		 * rotates. A token presented again after its rotation means it was copied: the session
		 * ends (the rightful holder logs in again; the thief's tokens stop working).
		 */
		async refresh(this: UserThis, refreshToken: string) {
			type Found = {
				session_id: string;
				expired: number;
				used: number;
				revoked: number;
				user_id: number;
				role: number;
				status: number;
			};
			const db = this.adapter.db;
			const hash = hashRefreshToken(refreshToken);
			const outcome = await inTransaction(db, async t => {
				const [row] = (await db.query(
					`SELECT r.session_id, r.expires_at <= NOW(3) AS expired, r.used_at IS NOT NULL AS used, s.revoked_at IS NOT NULL AS revoked, u.id AS user_id, u.role, u.status
					 FROM refresh_tokens r JOIN user_sessions s ON s.id = r.session_id JOIN users u ON u.id = s.user_id
					 WHERE r.token_hash = ? FOR UPDATE`,
					{ replacements: [hash], transaction: t, type: QueryTypes.SELECT }
				)) as Found[];
				if (!row || Number(row.revoked)) return { refused: "TOKEN_INVALID" as const };
				if (Number(row.used))
					return {
						refused: "TOKEN_INVALID" as const,
						reused: await this.revokeSessions("id = ? AND revoked_at IS NULL", [row.session_id], "reuse", t)
					};
				if (Number(row.expired)) return { refused: "TOKEN_EXPIRED" as const };
				if (row.status !== USER_ACTIVE) return { refused: "USER_DISABLED" as const };
				await db.query("UPDATE refresh_tokens SET used_at = NOW(3) WHERE token_hash = ?", {
					replacements: [hash],
					transaction: t,
					type: QueryTypes.UPDATE
				});
				return {
					sid: row.session_id,
					user: { id: Number(row.user_id), role: row.role },
					refreshToken: await this.issueRefreshToken(row.session_id, t)
				};
			});
			this.broker.metrics.increment("gomall_user_refreshes_total", {
				result: outcome.reused ? "reused" : outcome.refused ? "refused" : "success"
			});
			if (outcome.reused) {
				this.logger.warn(
					`a rotated refresh token was presented again: session ${outcome.reused.map(r => r.sid).join(", ")} ended`
				);
				await this.announceRevoked(outcome.reused);
				throw bizError("TOKEN_INVALID", undefined, "refresh token already used: the session has ended, log in again");
			}
			if (outcome.refused) throw bizError(outcome.refused);
			return this.tokensFor(outcome.user!, outcome.sid!, outcome.refreshToken!);
		},

		async logout(this: UserThis, user: AuthUser) {
			const revoked = await inTransaction(this.adapter.db, t =>
				this.revokeSessions("id = ? AND user_id = ? AND revoked_at IS NULL", [user.sid, user.id], "logout", t)
			);
			await this.announceRevoked(revoked);
		},

		/** The old password is checked; every session of the user but the caller's ends. */
		async changePassword(this: UserThis, user: AuthUser, oldPassword: string, newPassword: string) {
			const row = (await this.model.findByPk(user.id, { raw: true })) as UserRow | null;
			if (!row) throw bizError("USER_NOT_FOUND");
			if (!(await bcrypt.compare(oldPassword, row.password_hash))) throw bizError("USER_OLD_PASSWORD_WRONG");
			if (oldPassword === newPassword)
				throw bizError(
					"BAD_REQUEST",
					[{ field: "new_password", message: "the new password must differ from the old one" }],
					"validation failed"
				);
			const hash = await bcrypt.hash(newPassword, getConfig().bcrypt.cost);
			const revoked = await inTransaction(this.adapter.db, async t => {
				// Only if the hash is still the one checked: of two concurrent changes, one wins.
				const [, changed] = (await this.adapter.db.query(
					"UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?",
					{
						replacements: [hash, user.id, row.password_hash],
						transaction: t,
						type: QueryTypes.UPDATE
					}
				)) as unknown as [unknown, number];
				if (changed !== 1) throw bizError("USER_OLD_PASSWORD_WRONG");
				return this.revokeSessions(
					"user_id = ? AND id <> ? AND revoked_at IS NULL",
					[user.id, user.sid],
					"password",
					t
				);
			});
			await this.announceRevoked(revoked);
		},

		/**
		 * An admin sets a user's role and/or status. In one transaction that locks the admin's and
		 * the user's rows (in id order: two admins acting on each other queue, they do not deadlock):
		 * the caller must still be an active admin (its token may predate a change), the last
		 * active admin cannot demote or disable itself (409), and an actual change ends every
		 * session of the user. Asking for what is already so changes and ends nothing.
		 */
		async updateUser(this: UserThis, admin: AuthUser, id: number, change: { role?: number; status?: number }) {
			if (change.role === undefined && change.status === undefined)
				throw bizError(
					"BAD_REQUEST",
					["role", "status"].map(field => ({ field, message: "give role (1 or 2) or status (0 or 1), or both" })),
					"validation failed"
				);
			const db = this.adapter.db;
			const outcome = await inTransaction(db, async t => {
				const rows = (await db.query(
					"SELECT id, username, email, phone, role, status, created_at FROM users WHERE id IN (?) ORDER BY id FOR UPDATE",
					{ replacements: [[admin.id, id]], transaction: t, type: QueryTypes.SELECT }
				)) as Omit<UserRow, "password_hash">[];
				const caller = rows.find(r => Number(r.id) === admin.id);
				if (!caller || caller.role !== ROLE_ADMIN || caller.status !== USER_ACTIVE) throw bizError("NOT_ADMIN");
				const row = rows.find(r => Number(r.id) === id);
				if (!row) throw bizError("USER_NOT_FOUND");
				const role = change.role ?? row.role;
				const status = change.status ?? row.status;
				const after = { ...row, role, status };
				if (role === row.role && status === row.status)
					return { row: after, changed: false, revoked: [] as RevokedSession[] };
				if (row.role === ROLE_ADMIN && row.status === USER_ACTIVE && (role !== ROLE_ADMIN || status !== USER_ACTIVE)) {
					// Another active admin, locked, so it cannot be demoted meanwhile (its change waits for this one).
					const others = await db.query(
						"SELECT id FROM users WHERE role = ? AND status = ? AND id <> ? LIMIT 1 FOR UPDATE",
						{ replacements: [ROLE_ADMIN, USER_ACTIVE, id], transaction: t, type: QueryTypes.SELECT }
					);
					if (!others.length)
						throw bizError(
							"CONFLICT",
							undefined,
							"the last active admin cannot be demoted or disabled: make another user an admin first"
						);
				}
				await db.query("UPDATE users SET role = ?, status = ? WHERE id = ?", {
					replacements: [role, status, id],
					transaction: t,
					type: QueryTypes.UPDATE
				});
				const reason: RevokeReason =
					status !== USER_ACTIVE && row.status === USER_ACTIVE ? "disabled" : role !== row.role ? "role" : "enabled";
				return {
					row: after,
					changed: true,
					revoked: await this.revokeSessions("user_id = ? AND revoked_at IS NULL", [id], reason, t)
				};
			});
			if (outcome.changed)
				this.logger.info(
					`admin ${admin.id} set user ${id} to role ${outcome.row.role}, status ${outcome.row.status}: ${outcome.revoked.length} session(s) ended`
				);
			await this.announceRevoked(outcome.revoked);
			return { ...this.toPublic(outcome.row), status: outcome.row.status };
		},

		/** Ends the sessions matching `where` (in t); the sessions ended, with how long gateways must refuse their tokens. */
		async revokeSessions(this: UserThis, where: string, replacements: unknown[], reason: RevokeReason, t: Transaction) {
			const db = this.adapter.db;
			const rows = (await db.query(`SELECT id FROM user_sessions WHERE ${where} FOR UPDATE`, {
				replacements,
				transaction: t,
				type: QueryTypes.SELECT
			})) as { id: string }[];
			if (!rows.length) return [];
			const ids = rows.map(r => r.id);
			await db.query("UPDATE user_sessions SET revoked_at = NOW(3), revoke_reason = ? WHERE id IN (?)", {
				replacements: [reason, ids],
				transaction: t,
				type: QueryTypes.UPDATE
			});
			this.broker.metrics.increment("gomall_user_sessions_revoked_total", { reason }, ids.length);
			const until = refusedUntil(Date.now() / 1000, getConfig().jwt.expires_in);
			return ids.map(sid => ({ sid, until }));
		},

		/**
		 * Tells every gateway now, and waits for their answers, so that when logout answers, the
		 * session's access token already fails on every node. A gateway that misses this (cut off
		 * from NATS) catches up at its next resync (jwt.revocation_sync_interval).
		 */
		async announceRevoked(this: UserThis, sessions: RevokedSession[]) {
			if (!sessions.length) return;
			const answers = await callEachNode(this.broker, "api", "api.revokeSessions", { sessions }, 2000);
			for (const a of answers)
				if (a.error)
					this.logger.warn(
						`gateway ${a.node} did not take the revoked sessions (${a.error}); it catches up at its next resync`
					);
		},

		/**
		 * A resync used to read every session ended within the tokens' lifetime, every
		 * jwt.revocation_sync_interval: with 10,000 of them that was a 40 ms stall of a gateway's
		 * event loop every 30 s (the bench). With `since` it reads those ended since then, less
		 * a margin for a revocation that committed after a later one was read: its revoked_at is
		 * set by its UPDATE, and its transaction's statements end within db.statement_timeout_ms.
		 */
		async revokedSessions(this: UserThis, since?: number) {
			const cfg = getConfig();
			const ttl = cfg.jwt.expires_in;
			const margin = Math.max(RESYNC_MARGIN_S, Math.ceil((2 * cfg.db.statement_timeout_ms) / 1000));
			const rows = (await this.adapter.db.query(
				`SELECT id, CEIL(UNIX_TIMESTAMP(revoked_at)) AS revoked FROM user_sessions WHERE revoked_at > NOW(3) - INTERVAL ? SECOND${
					since === undefined ? "" : " AND revoked_at > FROM_UNIXTIME(?)"
				}`,
				{
					replacements: since === undefined ? [ttl + 1] : [ttl + 1, Math.max(0, since - margin)],
					type: QueryTypes.SELECT
				}
			)) as { id: string; revoked: number }[];
			return rows.map(r => ({ sid: r.id, until: refusedUntil(Number(r.revoked), ttl), revoked: Number(r.revoked) }));
		},

		/**
		 * Rows that can no longer matter: refresh tokens a day past their expiry (used or not),
		 * then sessions with no refresh token left whose access tokens have all expired. In
		 * batches, so no long lock; several user nodes doing it at once delete nothing twice.
		 */
		async purgeSessions(this: UserThis) {
			const db = this.adapter.db;
			const ttl = getConfig().jwt.expires_in + 1;
			const batch = async (sql: string, replacements: unknown[]) => {
				for (let total = 0; ;) {
					// BULKDELETE: Sequelize answers the affected row count.
					const affected = (await db.query(sql, { replacements, type: QueryTypes.BULKDELETE })) as unknown as number;
					total += affected;
					if (affected < 5000) return total;
				}
			};
			const tokens = await batch(
				"DELETE FROM refresh_tokens WHERE expires_at < NOW(3) - INTERVAL 1 DAY LIMIT 5000",
				[]
			);
			const sessions = await batch(
				`DELETE FROM user_sessions WHERE created_at < NOW(3) - INTERVAL ? SECOND AND (revoked_at IS NULL OR revoked_at < NOW(3) - INTERVAL ? SECOND)
				 AND NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.session_id = user_sessions.id) LIMIT 5000`,
				[ttl, ttl]
			);
			return { tokens, sessions };
		},

		/** The first admin, from GOMALL_ADMIN_USERNAME/PASSWORD; several nodes may race here. */
		async ensureAdmin(this: UserThis) {
			const { username, password } = getConfig().admin;
			if (!username || !password) return;
			const existing = await this.model.findOne({ where: { username }, raw: true });
			if (existing) return;
			try {
				await this.model.create({
					username,
					password_hash: await bcrypt.hash(password, getConfig().bcrypt.cost),
					role: ROLE_ADMIN,
					status: USER_ACTIVE
				});
				this.logger.info(`created the first admin user "${username}"`);
			} catch (err) {
				if (!(err instanceof UniqueConstraintError)) throw err;
			}
		}
	},

	created(this: UserThis) {
		const c = getConfig();
		this.tokens = new TokenService(c.jwt.secret, c.jwt.expires_in);
		counter(
			this.broker.metrics,
			"gomall_user_logins_total",
			"Logins by result",
			labelSets({ result: ["success", "wrong_password", "disabled"] })
		);
		counter(
			this.broker.metrics,
			"gomall_user_refreshes_total",
			"Refresh-token rotations by result (reused: a rotated token presented again, the session ended)",
			labelSets({ result: ["success", "refused", "reused"] })
		);
		counter(
			this.broker.metrics,
			"gomall_user_sessions_revoked_total",
			"Sessions ended, by reason",
			labelSets({ reason: REVOKE_REASONS })
		);
	},

	async started(this: UserThis) {
		this.unknownUserHash = await bcrypt.hash("gomall-timing-equaliser", getConfig().bcrypt.cost);
		await this.ensureAdmin();
		this.purgeTimer = setInterval(
			() => this.purgeSessions().catch(err => this.logger.warn(`purging old sessions failed (${(err as Error).name})`)),
			3600_000
		);
		this.purgeTimer.unref();
	},

	stopped(this: UserThis) {
		clearInterval(this.purgeTimer);
	}
};

export default UserService;
