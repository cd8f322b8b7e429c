// The real-database section of `npm run bench` (BENCH_ONLY=database runs it alone): the
// four maintenances of test/database.test.ts, longer (BENCH_DB_SECONDS of load, 30 by
// default, the maintenance 10 s in), each without intermission and inside
// `intermission run`, printed as one table. bench/run.ts keeps the results
// (bench/results/database.json) and draws bench/results/switchover.svg from M2.
import path from "node:path";
import { DatabaseStack } from "../test/harness/database.ts";
import { Sample } from "../test/harness/load.ts";
import { RunResult, runScenario, SCENARIOS, ScenarioName, Through } from "../test/harness/scenarios.ts";
import { plotSwitchover } from "./plot.ts";

const SECONDS = Number(process.env.BENCH_DB_SECONDS ?? 30);
const LEAD_IN = Math.min(10, SECONDS / 3);
const BUCKET_MS = 250;

export interface TimelinePoint {
  /** Seconds since the maintenance started. */
  t: number;
  ok_per_s: number;
  failed_per_s: number;
}

export interface DatabaseRow {
  scenario: ScenarioName;
  title: string;
  through: Through;
  variant: string;
  requests: number;
  ok: number;
  failed: number;
  failed_by: Record<string, number>;
  client_timeouts: number;
  slowest_ms: number;
  p99_ms: number;
  maintenance_ms: number;
  maintenance_exit: number;
  /** Why the maintenance did not take place (e.g. the CLI refused an option), if so. */
  not_done?: string;
  rows: number;
  lost: number;
  duplicated: number;
  unacknowledged: number;
  /** Answers per second by the time they ended, around the maintenance (M2 only). */
  timeline?: TimelinePoint[];
}

function timeline(samples: Sample[], maintenanceStartMs: number): TimelinePoint[] {
  const buckets = new Map<number, { ok: number; failed: number }>();
  for (const s of samples) {
    const b = Math.floor((s.end - maintenanceStartMs) / BUCKET_MS);
    const v = buckets.get(b) ?? { ok: 0, failed: 0 };
    if (s.status === 200) v.ok++;
    else v.failed++;
    buckets.set(b, v);
  }
  const keys = [...buckets.keys()];
  const out: TimelinePoint[] = [];
  for (let b = Math.min(...keys); b <= Math.max(...keys); b++) {
    const v = buckets.get(b) ?? { ok: 0, failed: 0 };
    out.push({ t: (b * BUCKET_MS) / 1000, ok_per_s: (v.ok * 1000) / BUCKET_MS, failed_per_s: (v.failed * 1000) / BUCKET_MS });
  }
  return out;
}

function row(r: RunResult, variant: string): DatabaseRow {
  return {
    scenario: r.scenario,
    title: SCENARIOS[r.scenario].title,
    through: r.through,
    variant,
    requests: r.load.requests,
    ok: r.load.ok,
    failed: r.load.failed,
    failed_by: { ...r.load.failedByStatus, ...r.load.errors },
    client_timeouts: r.load.timeouts,
    slowest_ms: r.load.slowestMs,
    p99_ms: r.load.p99Ms,
    maintenance_ms: Math.round(r.maintenance.endMs - r.maintenance.startMs),
    maintenance_exit: r.maintenance.exitCode,
    ...(r.happened ? { not_done: `${r.happened}: ${r.maintenance.output.trim().split("\n")[0]}` } : {}),
    rows: r.rows.rows,
    lost: r.rows.lost,
    duplicated: r.rows.duplicates,
    unacknowledged: r.rows.unacknowledged,
    ...(r.scenario === "M2" ? { timeline: timeline(r.samples, r.maintenance.startMs) } : {}),
  };
}

export async function databaseScenarios(): Promise<{ seconds: number; lead_in: number; runs: DatabaseRow[] }> {
  const stack = await DatabaseStack.start();
  const rows: DatabaseRow[] = [];
  try {
    const runs: [ScenarioName, "plain" | "intermission", string, string[]][] = [
      ["M1", "plain", "", []], ["M1", "intermission", "run", []],
      ["M2", "plain", "", []], ["M2", "intermission", "run", []],
      ["M3", "plain", "", []], ["M3", "intermission", "run --ready", ["--ready", `${stack.appUrl}/healthz`, "--ready-timeout", "20"]],
      ["M3", "intermission", "run", []],
      ["M4", "plain", "", []], ["M4", "intermission", "run", []],
    ];
    for (const [name, through, variant, runArgs] of runs) {
      process.stdout.write(`  database ${name} ${through} ${variant} (${SECONDS} s of load) ... `);
      const s = SCENARIOS[name];
      try {
        const r = await runScenario(stack, s, { through, seconds: SECONDS, leadIn: LEAD_IN, runArgs });
        rows.push(row(r, variant));
        console.log(`${r.load.failed} failed`);
      } finally {
        if (s.switchover) await stack.afterSwitchover();
      }
    }
  } finally {
    await stack.stop();
  }
  printTable(rows);
  return { seconds: SECONDS, lead_in: LEAD_IN, runs: rows };
}

function printTable(rows: DatabaseRow[]): void {
  const table: string[][] = [["scenario", "through", "requests", "failed", "by status", "client timeouts", "slowest (ms)",
    "maintenance (ms)", "rows / 200s"]];
  for (const r of rows) {
    const by = Object.entries(r.failed_by).map(([k, v]) => `${k}: ${v}`).join(", ") || "-";
    table.push([r.scenario, r.through === "plain" ? "nginx alone" : `intermission ${r.variant}`, String(r.requests),
      String(r.failed), by, String(r.client_timeouts), String(r.slowest_ms),
      `${r.maintenance_ms}${r.maintenance_exit ? ` (exit ${r.maintenance_exit})` : ""}${r.not_done ? " NOT DONE" : ""}`,
      `${r.rows} / ${r.ok}${r.lost || r.duplicated || r.unacknowledged ? ` (lost ${r.lost}, dup ${r.duplicated})` : ""}`]);
  }
  const widths = table[0].map((_, c) => Math.max(...table.map((r) => r[c].length)));
  const line = (r: string[]) => `| ${r.map((v, c) => v.padEnd(widths[c])).join(" | ")} |`;
  console.log("\nreal database (PostgreSQL 15, pool of 10, ~300 req/s from 16 connections):");
  console.log(line(table[0]));
  console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
  for (const r of table.slice(1)) console.log(line(r));
  for (const r of rows.filter((x) => x.not_done)) console.log(`  ${r.scenario} intermission ${r.variant}: ${r.not_done}`);
}

/** Draws the plot from the saved results (separately, so a run's numbers are kept even if drawing fails). */
export async function plotDatabase(root: string): Promise<void> {
  const dir = path.join(root, "bench/results");
  await plotSwitchover(path.join(dir, "database.json"), path.join(dir, "switchover.svg"));
  console.log("plot: bench/results/switchover.svg");
}

// The "unplanned" section (BENCH_ONLY=unplanned): the outages of
// test/unplanned-database.test.ts, nobody pausing, each without and with the option:
// U1 and U2 through intermission with outage_hold = 0 and with its default (10 s); U3
// through intermission, the application's route without and with the "not applied"
// middleware. BENCH_UNPLANNED_SECONDS of load (20 by default), the outage a third in.
const UNPLANNED_SECONDS = Number(process.env.BENCH_UNPLANNED_SECONDS ?? 20);
const UNPLANNED_LEAD_IN = Math.min(10, UNPLANNED_SECONDS / 3);

export interface UnplannedRun {
  through: Through;
  path: string;
  requests: number;
  ok: number;
  failed: number;
  failed_by: Record<string, number>;
  client_timeouts: number;
  p50_ms: number;
  p99_ms: number;
  slowest_ms: number;
  /** The same percentiles of the requests that ended before the outage began (this run's baseline). */
  before_p50_ms: number;
  before_p99_ms: number;
  rows: number;
  duplicated: number;
  /** U2: requests in flight when the application was killed. */
  in_flight_at_kill?: number;
  not_done?: string;
}

export interface UnplannedRow {
  scenario: ScenarioName;
  title: string;
  /** What "without" and "with" mean for this outage. */
  without_means: string;
  with_means: string;
  without: UnplannedRun;
  with: UnplannedRun;
}

function pct(ms: number[], p: number): number {
  const s = [...ms].sort((a, b) => a - b);
  return s.length ? Math.round(s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]) : 0;
}

function unplannedRun(r: RunResult, path: string): UnplannedRun {
  const before = r.samples.filter((x) => x.end < r.maintenance.startMs).map((x) => x.end - x.start);
  return {
    through: r.through,
    path,
    requests: r.load.requests,
    ok: r.load.ok,
    failed: r.load.failed,
    failed_by: { ...r.load.failedByStatus, ...r.load.errors },
    client_timeouts: r.load.timeouts,
    p50_ms: r.load.p50Ms,
    p99_ms: r.load.p99Ms,
    slowest_ms: r.load.slowestMs,
    before_p50_ms: pct(before, 50),
    before_p99_ms: pct(before, 99),
    rows: r.rows.rows,
    duplicated: r.rows.duplicates,
    ...(r.kill ? { in_flight_at_kill: r.samples.filter((x) => x.start < r.kill!.toMs && x.end > r.kill!.fromMs).length } : {}),
    ...(r.happened ? { not_done: r.happened } : {}),
  };
}

export async function unplannedScenarios(): Promise<{ seconds: number; lead_in: number; runs: UnplannedRow[] }> {
  const stack = await DatabaseStack.start({ nohold: true });
  const rows: UnplannedRow[] = [];
  const plan: [ScenarioName, string, [Through, string], string, [Through, string]][] = [
    ["U1", "outage_hold = 0", ["nohold", "/write"], "outage_hold = 10 (default)", ["intermission", "/write"]],
    ["U2", "outage_hold = 0", ["nohold", "/write"], "outage_hold = 10 (default)", ["intermission", "/write"]],
    ["U3", "the application's 500", ["intermission", "/write"], "\"not applied\" middleware", ["intermission", "/write-na"]],
  ];
  try {
    for (const [name, withoutMeans, [wt, wp], withMeans, [it, ip]] of plan) {
      const one = async (through: Through, p: string) => {
        process.stdout.write(`  unplanned ${name} ${through} ${p} (${UNPLANNED_SECONDS} s of load) ... `);
        const r = await runScenario(stack, SCENARIOS[name], { through, seconds: UNPLANNED_SECONDS, leadIn: UNPLANNED_LEAD_IN, path: p });
        console.log(`${r.load.failed} failed`);
        return unplannedRun(r, p);
      };
      const without = await one(wt, wp);
      const withIt = await one(it, ip);
      rows.push({ scenario: name, title: SCENARIOS[name].title, without_means: withoutMeans, with_means: withMeans, without, with: withIt });
    }
  } finally {
    await stack.stop();
  }
  console.log("\nunplanned outages (nobody pausing; ~300 req/s from 16 connections):");
  for (const r of rows) {
    console.log(`  ${r.scenario}: failed ${r.without.failed} (${r.without_means}) -> ${r.with.failed} (${r.with_means}); ` +
      `p50/p99 ${r.with.p50_ms}/${r.with.p99_ms} ms against ${r.with.before_p50_ms}/${r.with.before_p99_ms} ms before the outage` +
      `${r.with.in_flight_at_kill !== undefined ? `; ${r.with.in_flight_at_kill} in flight at the kill` : ""}`);
  }
  return { seconds: UNPLANNED_SECONDS, lead_in: UNPLANNED_LEAD_IN, runs: rows };
}
