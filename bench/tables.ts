// The README's measured tables, made from the stored runs in bench/results/ and written
// between marker comments in README.md:
//   <!-- bench:release --> ... <!-- /bench:release -->
// No figure in those blocks is typed by hand: each comes from a results file, and each
// block names the commit, machine and date it was measured at. `npm run bench` rewrites
// them after a run; `npm run tables` rewrites them from the files alone; `npm test`
// (test/readme-tables.test.ts) fails when README.md differs from what this makes.
//   node --import tsx bench/tables.ts           rewrite README.md
//   node --import tsx bench/tables.ts --check   exit 1 if README.md is out of date
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describeMachine, Provenance } from "./provenance.ts";

/** The blocks, each made from one results file, bench/results/<name>.json. */
export const BLOCKS = ["release", "hot", "fleet", "database", "unplanned"] as const;
export type BlockName = (typeof BLOCKS)[number];

type Results = Provenance & { section: string; seconds: number; [k: string]: any };

const RESULTS_DIR = "bench/results";

export function resultsFile(name: string): string {
  return `${RESULTS_DIR}/${name}.json`;
}

export function readResults(root: string, name: string): Results | undefined {
  const file = path.join(root, resultsFile(name));
  return existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : undefined;
}

const int = (v: number) => Math.round(v).toLocaleString("en-US");
/** A figure as measured, with thousands separators and at most `digits` decimals. */
const num = (v: number, digits = 2) => v.toLocaleString("en-US", { maximumFractionDigits: digits });

/** "commit `abc1234`, AMD EPYC, 2 cores, 24 GiB, 2026-12-06 (`bench/results/x.json`)" */
function measuredAt(r: Results, name: string): string {
  const commit = `commit \`${r.commit.slice(0, 7)}\`${r.dirty ? " with uncommitted changes" : ""}`;
  const date = r.date.slice(0, 10);
  return `Measured at ${commit} on ${describeMachine(r.machine)}, ${date} (\`${resultsFile(name)}\`)`;
}

function table(header: string[], align: ("l" | "r")[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  return [line(header), `|${align.map((a) => (a === "r" ? "---:" : "---")).join("|")}|`, ...rows.map(line)].join("\n");
}

function notMeasured(name: string): string {
  return `_Not measured yet: \`BENCH_ONLY=${name} npm run bench\` writes \`${resultsFile(name)}\`._`;
}

function releaseBlock(r: Results): string {
  const runs: any[] = r.release;
  const cols = runs.map((x) => `N = ${int(x.n)}`);
  const row = (label: string, f: (x: any) => string) => [label, ...runs.map(f)];
  const x0 = runs[0];
  const prev = r.previous;
  const rows = [
    row("plain burst through nginx, no intermission (ms)", (x) => int(x.plain_burst_ms)),
    row("release of N held requests, resume → last answer (ms)", (x) => int(x.release_ms)),
    row(x0.rounds > 1 ? `release ÷ plain burst (median of ${x0.rounds} rounds; min to max)` : "release ÷ plain burst",
      (x) => num(x.release_vs_burst) + (x.rounds > 1 ? ` (${num(x.release_vs_burst_min)} to ${num(x.release_vs_burst_max)})` : "")),
    ...(prev === undefined ? [] : [row(`release ÷ plain burst, the stored run before (commit \`${prev.commit.slice(0, 7)}\`, ${prev.date.slice(0, 10)})`,
      (x) => { const p = prev.release.find((y: any) => y.n === x.n); return p === undefined ? "–" : num(p.release_vs_burst); })]),
    ...(x0.release_cpu_ms === undefined ? [] : [row("nginx workers' CPU time: plain burst / release (ms)",
      (x) => `${int(x.plain_burst_cpu_ms)} / ${int(x.release_cpu_ms)}`)]),
    ...(x0.floor === undefined ? [] : [
      row("bare hold, the floor (same round): release ÷ its plain burst", (x) => num(x.floor.release_vs_burst)),
      row("bare hold: nginx workers' CPU time in the release (ms)", (x) => int(x.floor.release_cpu_ms)),
      row("release ÷ the bare hold's release", (x) => num(x.release_vs_floor)),
    ]),
    row("upstream arrival order vs hold order (Spearman ρ)", (x) => x.order_spearman.toFixed(5)),
    row("arrivals in exact hold order", (x) => `${num(x.in_order_fraction * 100, 1)}%`),
    row("failed requests", (x) => int(x.failed)),
    row("worker memory per 1,000 held (RSS, MiB)", (x) => num(x.rss_kib_per_1000 / 1024, 1)),
    row("queue-zone keys: before the pause / N held / all answered", (x) =>
      `${int(x.queue_keys.before)} / ${int(x.queue_keys.held)} / ${int(x.queue_keys.released)}`),
    row("state-zone keys: before the pause / N held / all answered", (x) =>
      `${int(x.state_keys.before)} / ${int(x.state_keys.held)} / ${int(x.state_keys.released)}`),
  ];
  const plotted = runs.find((x) => x.n === 3000) ?? runs[runs.length - 1];
  const peak = Math.max(0, ...plotted.timeline.map((p: any) => p.in_flight));
  const alt = `Releasing ${int(plotted.n)} held requests: held requests fall to zero ${int(plotted.release_ms)} ms after the resume ` +
    `while in-flight requests peak at ${int(peak)}, the release window being ${r.release_window}`;
  return [
    `${measuredAt(r, "release")}; nginx with ${r.workers} workers, \`release_window = ${r.release_window}\`. ` +
      "The backend answers at once, so the release is bound by nginx, not by the application:",
    "",
    table(["measure", ...cols], ["l", ...cols.map(() => "r" as const)], rows),
    "",
    `![${alt}](bench/results/release-timeline.svg)`,
  ].join("\n");
}

/** "3 runs", "1 run". */
const count = (n: number, what: string) => `${int(n)} ${what}${n === 1 ? "" : "s"}`;

function hotBlock(r: Results): string {
  const h = r.hot_path;
  // Results from before the in-place rows have no `content`: they are all proxied.
  const cg = (c: number, content = "proxy") => h.callgrind.find((x: any) => x.concurrency === c && (x.content ?? "proxy") === content &&
    (x.hooks ?? "intermission") === "intermission");
  const wiring = (c: number) => h.callgrind.find((x: any) => x.concurrency === c && x.hooks === "wiring only");
  const one = (x: any) => `+${int(x.hook_instructions)} instructions per request (${num(x.cost_pct)}%` +
    `${x.runs > 1 ? `; runs ${int(x.hook_instructions_min)} to ${int(x.hook_instructions_max)}` : ""})`;
  const c16 = cg(16);
  const c1 = cg(1);
  const g16 = cg(16, "empty_gif");
  const g1 = cg(1, "empty_gif");
  const median = (n: number, what: string) => (n > 1 ? `the median of ${count(n, what)}` : `one ${what}`);
  return [
    `${measuredAt(r, "hot")}; under callgrind, ${median(c16.runs, "run")} each: **${one(c16)}** with 16 concurrent ` +
      `keep-alive connections, and **${one(c1)}** with one connection sending one request at a time. ` +
      (g1 !== undefined && g16 !== undefined
        ? `Answered in place by nginx (\`empty_gif\`, so the denominator is nginx's own per-request work alone): ` +
          `**${one(g16)}** with 16 connections, **${one(g1)}** with one. `
        : "") +
      (wiring(1) !== undefined && wiring(16) !== undefined
        ? `The wiring alone, the same hook lines calling a module whose functions do nothing, answered in place: ` +
          `${one(wiring(16))} with 16 connections, ${one(wiring(1))} with one. `
        : "") +
      `wrk (32 connections, ${median(h.wrk_rounds, "interleaved round")} of ${h.wrk_seconds} s): ` +
      `${int(h.wrk_intermission_rps)} requests per second through intermission, ${int(h.wrk_empty_rps)} with empty hooks.`,
  ].join("\n");
}

function fleetBlock(r: Results): string {
  const runs: any[] = r.fleet;
  const cols = runs.map((x) => `N = ${x.nodes}`);
  const ms = (s: any) => `${num(s.p50_ms, 0)} / ${num(s.p99_ms, 0)} / ${num(s.max_ms, 0)}`;
  const row = (label: string, f: (x: any) => string) => [label, ...runs.map(f)];
  const rows = [
    row("pause → a node holding, p50 / p99 / max (ms)", (x) => ms(x.pause_to_node)),
    row("pause → every node holding, p50 / p99 / max (ms)", (x) => ms(x.pause_to_all)),
    row("resume → a node forwarding, p50 / p99 / max (ms)", (x) => ms(x.resume_to_node)),
    row("resume → every node forwarding, p50 / p99 / max (ms)", (x) => ms(x.resume_to_all)),
    row("resume → a request at the backend, p50 / p99 / max (ms)", (x) => ms(x.resume_to_backend)),
    row("Redis commands per node per second, idle / paused", (x) =>
      `${num(x.commands_per_node_s_idle)} / ${num(x.commands_per_node_s_paused)}`),
    row("Redis time per change published to the N nodes (µs)", (x) => num(x.publish_usec, 1)),
  ];
  return [
    `${measuredAt(r, "fleet")}; ${count(r.rounds, "pause")} and resumes per size, Redis commands counted over ${r.rate_seconds} s:`,
    "",
    table(["", ...cols], ["l", ...cols.map(() => "r" as const)], rows),
  ].join("\n");
}

const SCENARIO_LABEL: { [s: string]: string } = {
  M1: "M1 restart the primary",
  M2: "M2 switchover",
  M3: "M3 restart the application",
  M4: "M4 switchover, old primary up",
};

function databaseBlock(r: Results): string {
  const runs: any[] = r.runs;
  const rows = runs.map((x, i) => {
    const first = i === 0 || runs[i - 1].scenario !== x.scenario;
    const through = x.through === "plain" ? "nginx alone"
      : `intermission ${x.variant}${x.scenario === "M3" && x.variant === "run" ? " (the engine retries)" : ""}`;
    const by = Object.keys(x.failed_by).length > 0 ? ` (${Object.entries(x.failed_by).map(([k, v]) => `${k}: ${int(v as number)}`).join(", ")})` : "";
    const written = x.lost || x.duplicated || x.unacknowledged
      ? `${int(x.rows)} ≠ ${int(x.ok)} (lost ${x.lost}, twice ${x.duplicated}, unacknowledged ${x.unacknowledged})`
      : `${int(x.rows)} = ${int(x.ok)}`;
    const maintenance = `${(x.maintenance_ms / 1000).toFixed(1)} s${x.maintenance_exit ? ` (exit ${x.maintenance_exit})` : ""}${x.not_done ? " not done" : ""}`;
    return [first ? SCENARIO_LABEL[x.scenario] ?? x.scenario : "", through, int(x.requests), `**${int(x.failed)}**${by}`,
      int(x.client_timeouts), `${int(x.slowest_ms)} ms`, maintenance, written];
  });
  const rates = runs.map((x) => x.requests / r.seconds);
  const timeouts = runs.reduce((a, x) => a + x.client_timeouts, 0);
  const m2 = runs.filter((x) => x.scenario === "M2");
  const plain = m2.find((x) => x.through === "plain");
  const ours = m2.find((x) => x.through === "intermission");
  const alt = plain && ours
    ? `One switchover under load: with nginx alone, ${int(plain.failed)} of ${int(plain.requests)} requests fail while the primary is away; ` +
      `inside intermission run ${int(ours.failed)} of ${int(ours.requests)} fail: requests wait during the maintenance and answers resume as soon as the endpoint moves`
    : "One switchover under load, with nginx alone and inside intermission run";
  return [
    `${measuredAt(r, "database")}; ${r.seconds} s of load per run, the maintenance ${num(r.lead_in, 1)} s in; ` +
      `the generator asked for 300 requests per second and got ${int(Math.min(...rates))} to ${int(Math.max(...rates))}:`,
    "",
    table(["maintenance", "through", "requests", "failed", "client timeouts", "slowest", "maintenance", "rows = 200s"],
      ["l", "l", "r", "r", "r", "r", "r", "l"], rows),
    "",
    `${timeouts === 0 ? "No client timed out in any run." : `${int(timeouts)} client timeouts in all.`}`,
    "",
    `![${alt}](bench/results/switchover.svg)`,
  ].join("\n");
}

const UNPLANNED_LABEL: { [s: string]: string } = {
  U1: "U1 the app restarted `systemctl`-style",
  U2: "U2 the app SIGKILLed, restarted 1 s later",
  U3: "U3 `pg_ctl restart -m fast`",
};

function unplannedBlock(r: Results): string {
  const runs: any[] = r.runs;
  const signed = (v: number) => `${v >= 0 ? "+" : "−"}${int(Math.abs(v))}`;
  const failed = (x: any, means: string) => {
    const by = Object.keys(x.failed_by).length > 0 ? ` (${Object.entries(x.failed_by).map(([k, v]) => `${k}: ${int(v as number)}`).join(", ")})` : "";
    return `**${int(x.failed)}** of ${int(x.requests)}${by}, ${means}${x.not_done ? " (not done)" : ""}`;
  };
  const rows = runs.map((x) => [
    UNPLANNED_LABEL[x.scenario] ?? x.scenario,
    failed(x.without, x.without_means),
    `${failed(x.with, x.with_means)}${x.with.in_flight_at_kill !== undefined ? `; ${int(x.with.in_flight_at_kill)} in flight at the kill` : ""}`,
    `${signed(x.with.p50_ms - x.with.before_p50_ms)} / ${signed(x.with.p99_ms - x.with.before_p99_ms)} ms`,
    x.with.slowest_ms === undefined ? "-" : `${num(x.with.slowest_ms / 1000, 1)} s`,
    x.with.duplicated ? `${int(x.with.rows)} (${x.with.duplicated} twice)`
      : `${int(x.with.rows)} = ${int(x.with.ok)}${x.with.rows > x.with.ok ? ` + ${int(x.with.rows - x.with.ok)} the killed app committed, answered 502` : ""}`,
  ]);
  const rates = runs.flatMap((x) => [x.without, x.with]).map((x) => x.requests / r.seconds);
  return [
    `${measuredAt(r, "unplanned")}; nobody pausing, ${r.seconds} s of load per run, the outage ${num(r.lead_in, 1)} s in; ` +
      `the generator asked for 300 requests per second and got ${int(Math.min(...rates))} to ${int(Math.max(...rates))}. ` +
      "Added latency: the run's p50 / p99 with the option, less those of its own requests that ended before the outage " +
      "(on a busy machine that difference is within its noise; the slowest request is the one held longest):",
    "",
    table(["outage", "failed without", "failed with", "added latency p50 / p99", "slowest with", "rows with (= 200s)"],
      ["l", "l", "l", "r", "r", "l"], rows),
  ].join("\n");
}

const RENDER: { [b in BlockName]: (r: Results) => string } = {
  release: releaseBlock,
  hot: hotBlock,
  fleet: fleetBlock,
  database: databaseBlock,
  unplanned: unplannedBlock,
};

/** Each block's text, from the results files under root. */
export function renderTables(root: string): Map<BlockName, string> {
  const out = new Map<BlockName, string>();
  for (const name of BLOCKS) {
    const r = readResults(root, name);
    out.set(name, r === undefined ? notMeasured(name) : RENDER[name](r));
  }
  return out;
}

const markers = (name: string) => [`<!-- bench:${name} -->`, `<!-- /bench:${name} -->`];

/** The text between a block's markers (undefined: the README has no such block). */
export function blockIn(readme: string, name: string): string | undefined {
  const [open, close] = markers(name);
  const i = readme.indexOf(open);
  const j = readme.indexOf(close);
  if (i < 0 || j < i) return undefined;
  return readme.slice(i + open.length, j).replace(/^\n/, "").replace(/\n$/, "");
}

/** README text with every block replaced; each marker pair must be there exactly once. */
export function applyTables(readme: string, blocks: Map<BlockName, string>): string {
  let out = readme;
  for (const [name, body] of blocks) {
    const [open, close] = markers(name);
    const i = out.indexOf(open);
    const j = out.indexOf(close);
    if (i < 0 || j < i || out.indexOf(open, i + 1) >= 0) {
      throw new Error(`README.md needs exactly one ${open} ... ${close} pair`);
    }
    out = `${out.slice(0, i + open.length)}\n${body}\n${out.slice(j)}`;
  }
  return out;
}

/** Rewrites README.md's blocks; returns the names of those that changed. */
export function writeReadmeTables(root: string): string[] {
  const file = path.join(root, "README.md");
  const before = readFileSync(file, "utf8");
  const blocks = renderTables(root);
  const after = applyTables(before, blocks);
  if (after !== before) writeFileSync(file, after);
  return BLOCKS.filter((b) => blockIn(before, b) !== blockIn(after, b));
}

/** Sections measured at a commit that src/, dist/ or nginx/ have changed since (a warning, not an error). */
export function staleSections(root: string): string[] {
  const stale: string[] = [];
  for (const name of BLOCKS) {
    const r = readResults(root, name);
    if (r === undefined) continue;
    try {
      execFileSync("git", ["-C", root, "diff", "--quiet", r.commit, "HEAD", "--", "src", "dist", "nginx"], { stdio: "ignore" });
      if (r.dirty) stale.push(`${name} (measured with uncommitted changes)`);
    } catch {
      stale.push(`${name} (measured at ${r.commit.slice(0, 7)}; src/, dist/ or nginx/ changed since)`);
    }
  }
  return stale;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
  if (process.argv.includes("--check")) {
    const readme = readFileSync(path.join(root, "README.md"), "utf8");
    const differ = BLOCKS.filter((b) => blockIn(readme, b) !== renderTables(root).get(b));
    if (differ.length > 0) {
      console.error(`README.md's ${differ.join(", ")} table(s) differ from bench/results/: run npm run tables`);
      process.exit(1);
    }
    console.log("README.md's measured tables match bench/results/");
  } else {
    const changed = writeReadmeTables(root);
    console.log(`README.md: ${changed.length > 0 ? `rewrote ${changed.join(", ")}` : "tables unchanged"}`);
  }
  for (const s of staleSections(root)) console.warn(`warning: ${s}: run npm run bench again`);
}
