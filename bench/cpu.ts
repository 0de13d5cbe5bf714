/**
 * CPU time spent, as opposed to wall time: what a run cost each part of the system, so a
 * capacity model can divide it by what the run served. Linux only (/proc), as the bench is.
 */
import fs from "node:fs";
import type Redis from "ioredis";

/** Linux reports utime and stime in USER_HZ ticks, fixed at 100 per second in the userland ABI. */
const TICKS_PER_SECOND = 100;

interface ProcStat {
	pid: number;
	ppid: number;
	cpu: number;
}

function readStat(pid: number): ProcStat | null {
	let text: string;
	try {
		text = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
	} catch {
		return null; // gone between the listing and the read
	}
	// The command name (field 2) may hold spaces and parentheses: fields are counted after its last ")".
	const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
	// After the name: state(3) ppid(4) ... utime(14) stime(15), so index = field - 3.
	return { pid, ppid: Number(fields[1]), cpu: (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND };
}

function allStats(): ProcStat[] {
	return fs
		.readdirSync("/proc")
		.filter(name => /^\d+$/.test(name))
		.map(name => readStat(Number(name)))
		.filter((s): s is ProcStat => s !== null);
}

/** CPU seconds (user + system) of a process and its live descendants (a cluster's workers). */
export function treeCpuSeconds(rootPid: number): number {
	const stats = allStats();
	const children = new Map<number, ProcStat[]>();
	for (const s of stats) children.set(s.ppid, [...(children.get(s.ppid) ?? []), s]);
	let total = 0;
	const todo = stats.filter(s => s.pid === rootPid);
	while (todo.length) {
		const s = todo.pop()!;
		total += s.cpu;
		todo.push(...(children.get(s.pid) ?? []));
	}
	return total;
}

/** CPU seconds of every process whose command is `name` (the database server, shared by all). */
export function namedCpuSeconds(name: string): number {
	let total = 0;
	for (const pid of fs.readdirSync("/proc").filter(n => /^\d+$/.test(n))) {
		let comm = "";
		try {
			comm = fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim();
		} catch {
			continue;
		}
		if (comm === name) total += readStat(Number(pid))?.cpu ?? 0;
	}
	return total;
}

/** The Redis server's own CPU seconds (INFO cpu: used_cpu_user + used_cpu_sys). */
export async function redisCpuSeconds(redis: Redis): Promise<number> {
	const info = await redis.info("cpu");
	const field = (k: string) => Number(new RegExp(`^${k}:([\\d.]+)`, "m").exec(info)?.[1] ?? 0);
	return field("used_cpu_user") + field("used_cpu_sys");
}
