import type { Context, Service, ServiceSchema, ServiceSettingSchema } from "moleculer";
import bcrypt from "bcrypt";
import { DataTypes, UniqueConstraintError } from "sequelize";
import { getConfig } from "../config";
import { bizError } from "../lib/errors";
import { AuthUser, ROLE_ADMIN, ROLE_USER, TokenService } from "../lib/jwt";
import { counter, labelSets } from "../lib/metrics";
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

const USER_ACTIVE = 1;

/** Compared against when the username is unknown, so both failures take as long. */
const DUMMY_HASH = bcrypt.hashSync("gomall-timing-equaliser", 4);

const credentials = {
	username: { type: "string", pattern: /^[A-Za-z0-9_]{3,32}$/, messages: { stringPattern: "username must be 3-32 letters, digits or _" } },
	password: { type: "string", min: 8, max: 72 }
};

interface UserThis extends Service, DbThis {
	tokens: TokenService;
	toPublic(row: UserRow): PublicUser;
	register(p: { username: string; password: string; email?: string; phone?: string }): Promise<{ token: string; user: PublicUser }>;
	login(username: string, password: string): Promise<{ token: string; user: PublicUser }>;
	ensureAdmin(): Promise<void>;
}

/** The user actor: accounts, bcrypt passwords and JWTs. The hash never leaves this actor. */
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
				phone: { type: "string", pattern: /^\+?[0-9]{6,20}$/, optional: true, messages: { stringPattern: "phone must be 6-20 digits, optionally starting with +" } }
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
		toPublic(row: UserRow): PublicUser {
			return { id: Number(row.id), username: row.username, email: row.email, phone: row.phone, role: row.role, created_at: row.created_at };
		},

		async register(this: UserThis, p) {
			const hash = await bcrypt.hash(p.password, getConfig().bcrypt.cost);
			let row: UserRow;
			try {
				const created = await this.model.create({ username: p.username, password_hash: hash, email: p.email ?? null, phone: p.phone ?? null, role: ROLE_USER, status: USER_ACTIVE });
				row = (await this.model.findByPk(created.get("id") as number, { raw: true })) as unknown as UserRow;
			} catch (err) {
				// The unique keys decide between concurrent registrations; the losers get 409.
				if (err instanceof UniqueConstraintError) throw bizError("USER_ALREADY_EXISTS");
				throw err;
			}
			const user = this.toPublic(row);
			return { token: this.tokens.sign(user), user };
		},

		async login(this: UserThis, username: string, password: string) {
			const row = (await this.model.findOne({ where: { username }, raw: true })) as UserRow | null;
			const ok = await bcrypt.compare(password, row ? row.password_hash : DUMMY_HASH);
			const result = !row || !ok ? "wrong_password" : row.status !== USER_ACTIVE ? "disabled" : "success";
			this.broker.metrics.increment("gomall_user_logins_total", { result });
			if (result === "wrong_password") throw bizError("USER_WRONG_PASSWORD");
			if (result === "disabled") throw bizError("USER_DISABLED");
			if (!row) throw bizError("USER_WRONG_PASSWORD");
			const user = this.toPublic(row);
			return { token: this.tokens.sign(user), user };
		},

		/** The first admin, from GOMALL_ADMIN_USERNAME/PASSWORD; several nodes may race here. */
		async ensureAdmin(this: UserThis) {
			const { username, password } = getConfig().admin;
			if (!username || !password) return;
			const existing = await this.model.findOne({ where: { username }, raw: true });
			if (existing) return;
			try {
				await this.model.create({ username, password_hash: await bcrypt.hash(password, getConfig().bcrypt.cost), role: ROLE_ADMIN, status: USER_ACTIVE });
				this.logger.info(`created the first admin user "${username}"`);
			} catch (err) {
				if (!(err instanceof UniqueConstraintError)) throw err;
			}
		}
	},

	created(this: UserThis) {
		const c = getConfig();
		this.tokens = new TokenService(c.jwt.secret, c.jwt.expires_in);
		counter(this.broker.metrics, "gomall_user_logins_total", "Logins by result", labelSets({ result: ["success", "wrong_password", "disabled"] }));
	},

	async started(this: UserThis) {
		await this.ensureAdmin();
	}
};

export default UserService;
