// The four maintenances of the real-database proof, and one run of one of them under
// load, through intermission (`intermission run -- SCRIPT`, as an ops user would) or
// through the same nginx without it (SCRIPT alone). Shared by test/database.test.ts
// and `npm run bench`.
import { spawn } from "node:child_process";
import path from "node:path";
import { DatabaseStack } from "./database.ts";
import { Load, LoadSummary, Sample } from "./load.ts";
import { ROOT } from "./node.ts";

export type ScenarioName = "M1" | "M2" | "M3" | "M4";

export interface Scenario {
  name: ScenarioName;
  title: string;
  script: string;
  /** The replica is promoted: the stack swaps roles afterwards. */
  switchover: boolean;
}

export const SCENARIOS: Record<ScenarioName, Scenario> = {
  M1: { name: "M1", title: "restart the primary (pg_ctl restart -m fast)", script: "restart-primary.sh", switchover: false },
  M2: { name: "M2", title: "switchover: stop the primary, promote the replica, move the endpoint", script: "switchover.sh", switchover: true },
  M3: { name: "M3", title: "restart the application (returns once the new process is spawned)", script: "restart-app.sh", switchover: false },
  M4: { name: "M4", title: "switchover with the old primary left up (read-only, replay, promote, end sessions, move)", script: "switchover-live.sh", switchover: true },
};

export interface RunOptions {
  through: "intermission" | "plain";
  /** Seconds of load in all (longer if the maintenance ends less than 2 s before). */
  seconds: number;
  /** Seconds of load before the maintenance starts. */
  leadIn: number;
  /** Extra `intermission run` options, e.g. ["--ready", url]. */
  runArgs?: string[];
  rate?: number;
}

export interface RowCheck {
  rows: number;
  /** Ids written more than once. */
  duplicates: number;
  /** Answered 200 but not in the table. */
  lost: number;
  /** In the table but not answered 200. */
  unacknowledged: number;
}

export interface RunResult {
  scenario: ScenarioName;
  through: "intermission" | "plain";
  load: LoadSummary;
  rows: RowCheck;
  maintenance: { startMs: number; endMs: number; exitCode: number; output: string };
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
  if (s.name === "M1") {
    const before = await stack.primaryStartedAt();
    return async () => ((await stack.primaryStartedAt()) !== before ? undefined : "the primary was not restarted");
  }
  if (s.name === "M3") {
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
  const base = o.through === "intermission" ? stack.frontUrl : stack.plainUrl;
  const script = ["bash", path.join(ROOT, "examples/database", s.script)];
  const argv = o.through === "intermission"
    ? [process.execPath, CLI, "--url", stack.controlUrl, "run", "--reason", `${s.name} ${s.script}`, ...(o.runArgs ?? []), "--", ...script]
    : script;
  const happened = await observe(stack, s);
  const newPrimary = s.switchover ? stack.replica : stack.primary;

  const load = new Load(base, { prefix, rate: o.rate ?? 300, connections: 16, timeoutMs: 20_000 });
  load.start();
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
  let unacknowledged = 0;
  let total = 0;
  for (const [id, n] of rows) {
    total += n;
    if (n > 1) duplicates++;
    if (!ok.has(id)) unacknowledged++;
  }
  const lost = [...ok].filter((id) => !rows.has(id)).length;
  return {
    scenario: s.name,
    through: o.through,
    load: summary,
    rows: { rows: total, duplicates, lost, unacknowledged },
    maintenance: { startMs, endMs, exitCode: m.exitCode, output: m.output },
    happened: await happened(m.exitCode === 0),
    samples: load.samples,
  };
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
