// The four maintenances of the real-database proof, and one run of one of them under
// load, through intermission (`intermission run -- SCRIPT`, as an ops user would) or
// through the same nginx without it (SCRIPT alone). Shared by test/database.test.ts
// and `npm run bench`. The unplanned outages U1..U3 (test/unplanned-database.test.ts,
// issue 22) run their script alone, nobody pausing, through intermission with its
// default outage_hold or through the front with outage_hold = 0 ("nohold").
import { spawn } from "node:child_process";
import path from "node:path";
import { DatabaseStack } from "./database.ts";
import { Load, LoadSummary, Sample } from "./load.ts";
import { ROOT } from "./node.ts";

export type ScenarioName = "M1" | "M2" | "M3" | "M4" | "U1" | "U2" | "U3";
/** Which front the load goes through (nohold: DatabaseStack.start({ nohold: true })). */
export type Through = "intermission" | "plain" | "nohold";

export interface Scenario {
  name: ScenarioName;
  title: string;
  script: string;
  /** The replica is promoted: the stack swaps roles afterwards. */
  switchover: boolean;
  /** Nobody pauses: the script runs alone, through intermission too. */
  unplanned?: boolean;
}

export const SCENARIOS: Record<ScenarioName, Scenario> = {
  M1: { name: "M1", title: "restart the primary (pg_ctl restart -m fast)", script: "restart-primary.sh", switchover: false },
  M2: { name: "M2", title: "switchover: stop the primary, promote the replica, move the endpoint", script: "switchover.sh", switchover: true },
  M3: { name: "M3", title: "restart the application (returns once the new process is spawned)", script: "restart-app.sh", switchover: false },
  M4: { name: "M4", title: "switchover with the old primary left up (read-only, replay, promote, end sessions, move)", script: "switchover-live.sh", switchover: true },
  U1: { name: "U1", title: "the application restarted systemctl-style (returns once spawned), nobody pausing", script: "restart-app.sh", switchover: false, unplanned: true },
  U2: { name: "U2", title: "the application SIGKILLed, its supervisor starting it again 1 s later, nobody pausing", script: "kill-app.sh", switchover: false, unplanned: true },
  U3: { name: "U3", title: "pg_ctl restart -m fast, nobody pausing", script: "restart-primary.sh", switchover: false, unplanned: true },
};

export interface RunOptions {
  through: Through;
  /** Seconds of load in all (longer if the maintenance ends less than 2 s before). */
  seconds: number;
  /** Seconds of load before the maintenance starts. */
  leadIn: number;
  /** Extra `intermission run` options, e.g. ["--ready", url]. */
  runArgs?: string[];
  rate?: number;
  /** The application's route (default /write; /write-na is behind the "not applied" middleware). */
  path?: string;
}

export interface RowCheck {
  rows: number;
  /** Ids written more than once. */
  duplicates: number;
  /** Answered 200 but not in the table. */
  lost: number;
  /** In the table but not answered 200. */
  unacknowledged: number;
  /** Their ids. */
  unacknowledgedIds: string[];
}

export interface RunResult {
  scenario: ScenarioName;
  through: Through;
  load: LoadSummary;
  rows: RowCheck;
  maintenance: { startMs: number; endMs: number; exitCode: number; output: string };
  /** When the script says it killed the application ("killed PID between EPOCH_MS and EPOCH_MS", U2), in load time. */
  kill?: { fromMs: number; toMs: number };
  /** What shows the maintenance really happened, or why not. */
  happened: string | undefined;
  samples: Sample[];
}

const CLI = path.join(ROOT, "bin/intermission.js");
/** Load after the maintenance has ended, at least. */
const TRAIL_MS = 2000;

function spawnMaintenance(argv: string[], env: Record<string, string>): Promise<{ exitCode: number; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(argv[0], argv.slice(1), { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (c) => (output += c));
    child.stderr.on("data", (c) => (output += c));
    child.on("error", (e) => resolve({ exitCode: 127, output: `${output}${e.message}` }));
    child.on("exit", (code, signal) => resolve({ exitCode: code ?? (signal ? 128 : 1), output }));
  });
}

/**
 * Evidence that the maintenance took place: a new postmaster, a promoted replica, a new
 * app process (waited for only when the maintenance succeeded: it may still be starting).
 */
async function observe(stack: DatabaseStack, s: Scenario): Promise<(succeeded: boolean) => Promise<string | undefined>> {
  if (s.name === "M1" || s.name === "U3") {
    const before = await stack.primaryStartedAt();
    return async () => ((await stack.primaryStartedAt()) !== before ? undefined : "the primary was not restarted");
  }
  if (s.name === "M3" || s.name === "U1" || s.name === "U2") {
    const before = await stack.appUp();
    return async (succeeded) => stack.appUp(before, succeeded ? 60_000 : 100).then(() => undefined, () => "the application was not restarted");
  }
  const replica = stack.replica;
  return async () => ((await stack.isInRecovery(replica)) ? "the replica was not promoted" : undefined);
}

export async function runScenario(stack: DatabaseStack, s: Scenario, o: RunOptions): Promise<RunResult> {
  // Start from a whole stack: the application answering, the replica streaming.
  await stack.appUp();
  await stack.waitStreaming();
  const prefix = `${s.name.toLowerCase()}-${o.through}-${Date.now().toString(36)}`;
  const front = { intermission: stack.front, plain: stack.plain, nohold: stack.nohold }[o.through];
  if (!front) throw new Error(`no ${o.through} front: DatabaseStack.start({ nohold: true })`);
  const base = front.base;
  const script = ["bash", path.join(ROOT, "examples/database", s.script)];
  const argv = o.through === "intermission" && !s.unplanned
    ? [process.execPath, CLI, "--url", stack.controlUrl, "run", "--reason", `${s.name} ${s.script}`, ...(o.runArgs ?? []), "--", ...script]
    : script;
  const happened = await observe(stack, s);
  const newPrimary = s.switchover ? stack.replica : stack.primary;

  const load = new Load(base, { prefix, rate: o.rate ?? 300, connections: 16, timeoutMs: 20_000, path: o.path });
  load.start();
  const epochAtZero = Date.now() - load.now();
  await new Promise((r) => setTimeout(r, o.leadIn * 1000));
  const startMs = load.now();
  const m = await spawnMaintenance(argv, { ...stack.env() });
  const endMs = load.now();
  // Load for `seconds` in all, and always a while after the maintenance (a slow one too).
  const rest = Math.max(o.seconds * 1000 - load.now(), TRAIL_MS);
  if (rest > 0) await new Promise((r) => setTimeout(r, rest));
  const summary = await load.stop();

  const written = await stack.sql(newPrimary, `SELECT id, count(*) FROM hits WHERE id LIKE '${prefix}-%' GROUP BY id`);
  const rows = new Map(written.split("\n").filter(Boolean).map((l) => l.split("\t")).map(([id, n]) => [id, Number(n)]));
  const ok = new Set(load.okIds());
  let duplicates = 0;
  const unacknowledgedIds: string[] = [];
  let total = 0;
  for (const [id, n] of rows) {
    total += n;
    if (n > 1) duplicates++;
    if (!ok.has(id)) unacknowledgedIds.push(id);
  }
  const lost = [...ok].filter((id) => !rows.has(id)).length;
  const killed = / between (\d{13}) and (\d{13})\b/.exec(m.output);
  return {
    scenario: s.name,
    through: o.through,
    load: summary,
    rows: { rows: total, duplicates, lost, unacknowledged: unacknowledgedIds.length, unacknowledgedIds },
    maintenance: { startMs, endMs, exitCode: m.exitCode, output: m.output },
    ...(killed ? { kill: { fromMs: Number(killed[1]) - epochAtZero, toMs: Number(killed[2]) - epochAtZero } } : {}),
    happened: await happened(m.exitCode === 0),
    samples: load.samples,
  };
}

/**
 * What must hold for every run: the maintenance happened, and no write was lost or doubled.
 * `diedWith`: ids of failed requests the application may have applied before it died (a
 * SIGKILL after the commit, before the answer): their rows are not counted against the run.
 */
export function common(r: RunResult, diedWith: Set<string> = new Set()): string[] {
  const p: string[] = [];
  if (r.maintenance.exitCode !== 0) {
    p.push(`the maintenance exited ${r.maintenance.exitCode}:\n${r.maintenance.output.trim().split("\n").slice(0, 3).join("\n")}`);
  }
  if (r.happened) p.push(r.happened);
  // The maintenance happened under load: requests before it, during it and after it.
  const { startMs, endMs } = r.maintenance;
  const before = r.samples.filter((x) => x.start < startMs).length;
  const during = r.samples.filter((x) => x.start < endMs && x.end > startMs).length;
  const after = r.samples.filter((x) => x.start > endMs).length;
  if (!before || !during || !after) p.push(`no load around the maintenance: ${before} before, ${during} during, ${after} after`);
  if (r.rows.lost) p.push(`${r.rows.lost} request(s) answered 200 have no row (lost writes)`);
  if (r.rows.duplicates) p.push(`${r.rows.duplicates} id(s) written more than once`);
  const died = r.rows.unacknowledgedIds.filter((id) => diedWith.has(id)).length;
  if (r.rows.unacknowledged > died) p.push(`${r.rows.unacknowledged - died} row(s) for requests not answered 200`);
  if (r.rows.rows !== r.load.ok + died) p.push(`${r.rows.rows} rows for ${r.load.ok} requests answered 200${died ? ` and ${died} that died with the application` : ""}`);
  if (r.load.mismatched) p.push(`${r.load.mismatched} answer(s) carried another request's id`);
  return p;
}

/** One line per run, for test output and the bench. */
export function describeRun(r: RunResult): string {
  const l = r.load;
  const by = Object.entries({ ...l.failedByStatus, ...l.errors }).map(([k, v]) => `${k}: ${v}`).join(", ");
  return `${r.scenario} ${r.through.padEnd(12)} ${l.requests} requests, ${l.failed} failed${by ? ` (${by})` : ""}, ` +
    `${l.timeouts} client timeouts, slowest ${l.slowestMs} ms, p99 ${l.p99Ms} ms; maintenance ` +
    `${Math.round(r.maintenance.endMs - r.maintenance.startMs)} ms (exit ${r.maintenance.exitCode}); rows ${r.rows.rows} ` +
    `for ${l.ok} answered 200 (lost ${r.rows.lost}, duplicated ${r.rows.duplicates}, unacknowledged ${r.rows.unacknowledged})`;
}
