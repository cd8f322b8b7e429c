// npm run bench: measures intermission against nginx without it, on this machine, and
// stores every figure the README quotes in bench/results/<section>.json, each with the
// commit, the machine and the date (bench/provenance.ts); then rewrites the README's
// measured tables from those files (bench/tables.ts; npm run tables does that alone).
//
//   release   N held requests: time from the resume call to the last response, against
//             the same N sent as one plain burst through nginx without intermission;
//             the order they reached the upstream (Spearman rank correlation with the
//             hold order, from the tickets in error.log); worker RSS and the shared-dict
//             keys a held and a released request leave.
//   hot       unpaused cost: wrk throughput against an empty access/log hook, and
//             instructions per request under callgrind (repeatable on a noisy box).
//   steady    steady load across a pause: throughput before and after, the drain's end.
//   fleet     N one-worker nodes on one Redis: pause and resume propagation, Redis's load.
//   database  the four real-PostgreSQL maintenances of test/database.test.ts, longer,
//             with and without intermission (in containers; see bench/database.ts).
//   unplanned the unplanned outages of test/unplanned-database.test.ts (nobody pausing),
//             longer, without and with outage_hold / the "not applied" middleware.
//
// Knobs (environment): BENCH_ONLY=release,hot,... runs some sections (each keeps its own
// file, the others' stay as they were); BENCH_SAVE=0 saves nothing and leaves the README
// alone; BENCH_SIZES, BENCH_WINDOW, BENCH_RELEASE_ROUNDS (release); BENCH_WRK_ROUNDS, BENCH_WRK_SECONDS,
// BENCH_CALLGRIND_RUNS (hot); BENCH_FLEET_SIZES, BENCH_FLEET_ROUNDS,
// BENCH_FLEET_RATE_SECONDS (fleet); BENCH_DB_SECONDS (database); BENCH_UNPLANNED_SECONDS
// (unplanned). A results file keeps the values it was measured with, and the README's
// tables say them.
import http from "node:http";
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync, rmSync, cpSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BenchNginx, PlainNginx, PORTS, benchConfig, fleetNodeConfig, fleetBackendConfig, FLEET_PORT_BASE } from "./nginx.ts";
import { callgrindPerRequest, CallgrindResult, wiringOnlyRoot } from "./callgrind.ts";
import { floorRoot } from "./floor.ts";
import { plotRelease } from "./plot.ts";
import { databaseScenarios, plotDatabase, unplannedScenarios } from "./database.ts";
import { commitOf, describeMachine, machine, provenance } from "./provenance.ts";
import { writeReadmeTables, readResults } from "./tables.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const WORK = path.join(os.tmpdir(), "intermission-bench");
const SNAPSHOT = path.join(WORK, "snapshot");
const SIZES = (process.env.BENCH_SIZES ?? "1000,3000,10000").split(",").map(Number);
const WINDOW = Number(process.env.BENCH_WINDOW ?? 64);
/** Rounds per release size (BENCH_RELEASE_ROUNDS); the median round is kept, with the spread. */
const RELEASE_ROUNDS = Number(process.env.BENCH_RELEASE_ROUNDS ?? 3);
/** Issue 23's goal for the unpaused hooks answered in place: instructions per request ÷ those with empty hooks. */
const HOT_GOAL = 1.03;
/** Issue 23's goal for 3,000 held requests against a healthy backend: release ÷ plain burst. */
const RELEASE_GOAL = 0.25;
const WORKERS = 2;
/** BENCH_ONLY=release,fleet,...: these sections only; each saves its own results file. */
const ONLY = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.split(",")) : undefined;
const wanted = (section: string) => ONLY === undefined || ONLY.has(section);
/** BENCH_SAVE=0: print the figures, keep no file, leave the README alone (trying things out). */
const SAVE = process.env.BENCH_SAVE !== "0";

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

function request(port: number, p: string, method = "GET", fresh = true): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path: p, method, agent: fresh ? false : agent }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

/** Live (unexpired) keys in intermission's two zones, from the bench nginx's /_bench/keys. */
async function zoneKeys(): Promise<{ state: number; queue: number }> {
  return JSON.parse((await request(PORTS.backend, "/_bench/keys", "GET", false)).body);
}

async function status(): Promise<any> {
  return JSON.parse((await request(PORTS.intermission, "/_intermission/status", "GET", false)).body);
}

async function until(what: string, check: () => Promise<boolean>, ms = 120_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`bench: timed out waiting for ${what}`);
}

/** N requests at once on fresh connections; ms from the first send to the last answer. */
async function burst(port: number, n: number, query: string): Promise<{ ms: number; failed: number }> {
  const t0 = performance.now();
  const replies = await Promise.allSettled(Array.from({ length: n }, () => request(port, `/${query}`)));
  const ms = performance.now() - t0;
  return { ms, failed: replies.filter((r) => r.status === "rejected" || r.value.status !== 200).length };
}

function spearman(xs: number[]): number {
  // xs[i] = hold rank of the i-th arrival; ranks are 0..n-1 without ties.
  const n = xs.length;
  if (n < 2) return 1;
  const order = xs.map((v, i) => [v, i]).sort((a, b) => a[0] - b[0]);
  let d2 = 0;
  order.forEach(([, arrival], holdRank) => (d2 += (holdRank - arrival) ** 2));
  return 1 - (6 * d2) / (n * (n * n - 1));
}

interface ReleaseResult {
  n: number;
  plain_burst_ms: number;
  release_ms: number;
  release_vs_burst: number;
  /** nginx workers' CPU time (user + system, ms) over the plain burst and over the release. */
  plain_burst_cpu_ms: number;
  release_cpu_ms: number;
  order_spearman: number;
  in_order_fraction: number;
  failed: number;
  rss_kib_per_1000: number;
  /** Live keys in the queue zone (tickets, claims, leases): before the pause, with N held, once all are answered. */
  queue_keys: { before: number; held: number; released: number };
  /** The same in the state zone (modes, lanes, counts, per-worker in-flight keys). */
  state_keys: { before: number; held: number; released: number };
  /** Status samples through the cycle; t in ms since the resume call. */
  timeline: { t: number; held: number; queued: number; in_flight: number }[];
  /** The same round's bare hold (floor.ts): the least a release can take on this machine. */
  floor?: FloorResult;
  /** release_ms ÷ floor.release_ms. */
  release_vs_floor?: number;
}

interface FloorResult {
  plain_burst_ms: number;
  release_ms: number;
  release_vs_burst: number;
  plain_burst_cpu_ms: number;
  release_cpu_ms: number;
  failed: number;
}

/**
 * Once nginx answers: both paths warmed up (neither pays first-use costs in the
 * measurement), then N requests at once through plain nginx, with the workers' CPU time.
 */
async function warmAndBurst(nginx: BenchNginx, n: number): Promise<{ plain: { ms: number; failed: number }; plainCpu: number }> {
  await until("nginx", async () => (await status()).state === "running");
  await burst(PORTS.plain, 200, "");
  await burst(PORTS.intermission, 200, "");
  const cpu0 = nginx.workersCpuMs();
  const plain = await burst(PORTS.plain, n, "");
  return { plain, plainCpu: nginx.workersCpuMs() - cpu0 };
}

/** Resumes, and waits for every held request's answer: the release's wall-clock and CPU time. */
async function resumeAndWait(nginx: BenchNginx, held: Promise<{ status: number; body: string }>[]) {
  const cpu0 = nginx.workersCpuMs();
  const resumeAt = performance.now();
  await request(PORTS.intermission, "/_intermission/resume", "POST", false);
  const replies = await Promise.allSettled(held);
  return { replies, releaseMs: performance.now() - resumeAt, releaseCpu: nginx.workersCpuMs() - cpu0 };
}

/**
 * The bare hold of floor.ts, measured as releaseRun measures intermission: a plain burst,
 * then N held and all woken at once at the resume.
 */
async function floorRun(n: number): Promise<FloorResult> {
  const dir = path.join(WORK, `floor-${n}`);
  rmSync(dir, { recursive: true, force: true });
  const nginx = BenchNginx.start({ root: floorRoot(SNAPSHOT, WORK), dir, workers: WORKERS, setup: {} });
  try {
    const { plain, plainCpu } = await warmAndBurst(nginx, n);
    await request(PORTS.intermission, "/_intermission/pause", "POST", false);
    const held = Array.from({ length: n }, () => request(PORTS.intermission, "/"));
    await until(`${n} held (floor)`, async () => (await status()).held === n);
    const { replies, releaseMs, releaseCpu } = await resumeAndWait(nginx, held);
    const failed = replies.filter((r) => r.status === "rejected" || r.value.status !== 200).length;
    return {
      plain_burst_ms: round(plain.ms), release_ms: round(releaseMs), release_vs_burst: round(releaseMs / plain.ms, 3),
      plain_burst_cpu_ms: round(plainCpu), release_cpu_ms: round(releaseCpu), failed: failed + plain.failed,
    };
  } finally {
    agent.destroy(); // its keep-alive sockets end with this nginx (the next run's would hang up)
    nginx.stop();
  }
}

async function releaseRun(n: number): Promise<ReleaseResult> {
  const dir = path.join(WORK, `release-${n}`);
  rmSync(dir, { recursive: true, force: true });
  const nginx = BenchNginx.start({
    root: SNAPSHOT, dir, workers: WORKERS,
    setup: { max_held: n + 100, release_window: WINDOW, max_hold: 300, pause_ttl: 0 },
  });
  try {
    const { plain, plainCpu } = await warmAndBurst(nginx, n);

    const rssBefore = nginx.workersRssKiB();
    const before = await zoneKeys();
    await request(PORTS.intermission, "/_intermission/pause", "POST", false);
    const t0 = performance.now();
    const held = Array.from({ length: n }, () => request(PORTS.intermission, "/?record=1"));
    await until(`${n} held`, async () => (await status()).held === n);
    const heldAt = await zoneKeys();
    const rssHeld = nginx.workersRssKiB();

    // Sample the queue while it drains, for the timeline plot.
    const timeline: ReleaseResult["timeline"] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const s = await status();
        timeline.push({ t: performance.now() - t0, held: s.held, queued: s.queued, in_flight: s.in_flight });
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    const resumeAt = performance.now();
    const { replies, releaseMs, releaseCpu } = await resumeAndWait(nginx, held);
    sampling = false;
    await sampler;
    const failed = replies.filter((r) => r.status === "rejected" || r.value.status !== 200).length;
    // Every response is in: the last of them settles its lease in its log phase, just after.
    await until("the release to settle", async () => (await status()).release.leases === 0, 10_000);
    const afterRelease = await zoneKeys();

    // Order: ticket (hold order) of each request, in the order the upstream saw them.
    const tickets = new Map<string, number>();
    for (const m of nginx.errorLog().matchAll(/hold request_id=([0-9a-f]+) scope=\S+ ticket=(\d+)/g)) {
      tickets.set(m[1], Number(m[2]));
    }
    const arrivals = (await request(PORTS.backend, "/_backend/arrivals")).body.split("\n").filter(Boolean);
    const ranks = arrivals.map((line) => tickets.get(line.split(" ")[0])).filter((t): t is number => t !== undefined);
    const holdRank = [...ranks].sort((a, b) => a - b);
    const rankOf = new Map(holdRank.map((t, i) => [t, i]));
    const xs = ranks.map((t) => rankOf.get(t)!);
    const inOrder = xs.filter((v, i) => i === 0 || v > xs[i - 1]).length / Math.max(1, xs.length);

    return {
      n,
      plain_burst_ms: round(plain.ms),
      release_ms: round(releaseMs),
      release_vs_burst: round(releaseMs / plain.ms, 3),
      plain_burst_cpu_ms: round(plainCpu),
      release_cpu_ms: round(releaseCpu),
      order_spearman: round(spearman(xs), 5),
      in_order_fraction: round(inOrder, 4),
      failed: failed + plain.failed + (xs.length === n ? 0 : n - xs.length),
      rss_kib_per_1000: round(((rssHeld - rssBefore) / n) * 1000),
      queue_keys: { before: before.queue, held: heldAt.queue, released: afterRelease.queue },
      state_keys: { before: before.state, held: heldAt.state, released: afterRelease.state },
      timeline: timeline.map((p) => ({ ...p, t: round(p.t - (resumeAt - t0), 2) })),
    };
  } finally {
    agent.destroy();
    nginx.stop();
  }
}

function round(v: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

function wrk(port: number, seconds: number): number {
  const out = execFileSync("wrk", ["-t1", "-c32", `-d${seconds}s`, `http://127.0.0.1:${port}/`], { encoding: "utf8" });
  const m = out.match(/Requests\/sec:\s+([\d.]+)/);
  if (!m) throw new Error(`cannot read wrk output:\n${out}`);
  return Number(m[1]);
}

const WRK_ROUNDS = Number(process.env.BENCH_WRK_ROUNDS ?? 5);
const WRK_SECONDS = Number(process.env.BENCH_WRK_SECONDS ?? 3);

async function hotPath(): Promise<Omit<HotResult, "callgrind">> {
  const dir = path.join(WORK, "hotpath");
  rmSync(dir, { recursive: true, force: true });
  const nginx = BenchNginx.start({ root: SNAPSHOT, dir, workers: WORKERS, setup: {} });
  try {
    await until("nginx", async () => (await status()).state === "running");
    wrk(PORTS.empty, 1);
    wrk(PORTS.intermission, 1);
    const empty: number[] = [];
    const ours: number[] = [];
    // Interleaved rounds, median of each, so drift on a shared box hits both alike.
    for (let i = 0; i < WRK_ROUNDS; i++) {
      empty.push(wrk(PORTS.empty, WRK_SECONDS));
      ours.push(wrk(PORTS.intermission, WRK_SECONDS));
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const e = median(empty);
    const o = median(ours);
    return { wrk_empty_rps: round(e), wrk_intermission_rps: round(o), wrk_cost_pct: round(((e - o) / e) * 100, 2),
      wrk_rounds: WRK_ROUNDS, wrk_seconds: WRK_SECONDS };
  } finally {
    agent.destroy();
    nginx.stop();
  }
}

/** Not 16379, so that a bench of an earlier version running beside it keeps its own Redis. */
const REDIS_PORT = 16381;
const FLEET_SIZES = (process.env.BENCH_FLEET_SIZES ?? "10,30,50,100").split(",").map(Number);
const FLEET_ROUNDS = Number(process.env.BENCH_FLEET_ROUNDS ?? 30);
/** Seconds over which the Redis command rate is measured, idle and paused. */
const FLEET_RATE_SECONDS = Number(process.env.BENCH_FLEET_RATE_SECONDS ?? 30);

interface SteadyResult {
  connections: number;
  window: number;
  before_rps: number;
  after_rps: number;
  after_vs_before: number;
  drain_end_ms: number;
  failed: number;
}

/**
 * Steady load across a pause: `connections` keep-alive loops against a backend that takes
 * 20 ms, with a release window far below that concurrency. Throughput in the 2 s before
 * the pause and from 1 to 5 s after the resume, and the time until `draining` ends.
 */
async function steadyAcrossPause(): Promise<SteadyResult> {
  const dir = path.join(WORK, "steady");
  const connections = 32;
  const window = 4;
  const nginx = BenchNginx.start({ root: SNAPSHOT, dir, workers: WORKERS, setup: { release_window: window, max_hold: 30, pause_ttl: 0 } });
  try {
    await until("nginx", async () => (await status()).state === "running");
    const loopAgent = new http.Agent({ keepAlive: true, maxSockets: connections });
    const done: { at: number; ok: boolean }[] = [];
    let running = true;
    const one = () => new Promise<boolean>((resolve) => {
      const req = http.get({ host: "127.0.0.1", port: PORTS.intermission, path: "/?delay=0.02", agent: loopAgent }, (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode === 200));
      });
      req.on("error", () => resolve(false));
    });
    const loops = Array.from({ length: connections }, async () => {
      while (running) done.push({ ok: await one(), at: performance.now() });
    });
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    await sleep(1000);
    const t0 = performance.now();
    await sleep(2000);
    const t1 = performance.now();
    await request(PORTS.intermission, "/_intermission/pause", "POST", false);
    await sleep(1000);
    await request(PORTS.intermission, "/_intermission/resume", "POST", false);
    const resumed = performance.now();
    await until("the drain to end", async () => (await status()).draining === false, 30_000);
    const drainEnd = performance.now() - resumed;
    await sleep(Math.max(0, 5000 - (performance.now() - resumed)));
    running = false;
    await Promise.all(loops);
    loopAgent.destroy();
    const rate = (from: number, to: number) => done.filter((d) => d.ok && d.at >= from && d.at < to).length / ((to - from) / 1000);
    const before = rate(t0, t1);
    const after = rate(resumed + 1000, resumed + 5000);
    return {
      connections, window,
      before_rps: round(before, 0), after_rps: round(after, 0), after_vs_before: round(after / before, 2),
      drain_end_ms: round(drainEnd, 0), failed: done.filter((d) => !d.ok).length,
    };
  } finally {
    nginx.stop();
  }
}

function percentile(xs: number[], p: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

interface Spread { p50_ms: number; p99_ms: number; max_ms: number }

function spread(xs: number[]): Spread {
  return { p50_ms: round(percentile(xs, 50), 2), p99_ms: round(percentile(xs, 99), 2), max_ms: round(Math.max(...xs), 2) };
}

interface FleetResult {
  nodes: number;
  rounds: number;
  /** From sending the pause to node 0 until each node holds (samples: nodes x rounds). */
  pause_to_node: Spread;
  /** From sending the pause until the last node holds, per round. */
  pause_to_all: Spread;
  /** From sending the resume until each node sends its held request upstream (the node's clock, X-Node-Sent). */
  resume_to_node: Spread;
  resume_to_all: Spread;
  /** From sending the resume until each held request reaches the backend (one nginx worker, on the same cores). */
  resume_to_backend: Spread;
  /** Redis commands (INFO commandstats, script-internal calls included) per node per second. */
  commands_per_node_s_idle: number;
  commands_per_node_s_paused: number;
  commands_by_name_idle: { [cmd: string]: number };
  /** Redis's own time per PUBLISH of a change to the N nodes (INFO commandstats usec / calls). */
  publish_usec: number;
}

/** Every command Redis has run, by name (INFO commandstats; calls inside scripts count too). */
function commandStats(): Map<string, number> {
  return commandStatsWithTime().calls;
}

/** Calls and microseconds spent, by command name. */
function commandStatsWithTime(): { calls: Map<string, number>; usec: Map<string, number> } {
  const out = execFileSync("redis-cli", ["-p", String(REDIS_PORT), "INFO", "commandstats"], { encoding: "utf8" });
  const calls = new Map<string, number>();
  const usec = new Map<string, number>();
  for (const m of out.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
    calls.set(m[1], Number(m[2]));
    usec.set(m[1], Number(m[3]));
  }
  return { calls, usec };
}

/** Commands per node per second over `seconds`, not counting this bench's own INFO calls. */
async function commandRate(nodes: number, seconds: number): Promise<{ total: number; byName: { [cmd: string]: number } }> {
  const before = commandStats();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const after = commandStats();
  const elapsed = (performance.now() - t0) / 1000;
  const byName: { [cmd: string]: number } = {};
  let total = 0;
  for (const [name, calls] of after) {
    if (name === "info") continue;
    const delta = calls - (before.get(name) ?? 0);
    if (delta <= 0) continue;
    byName[name] = round(delta / nodes / elapsed, 3);
    total += delta;
  }
  return { total: round(total / nodes / elapsed, 3), byName };
}

/**
 * Fleet table: N nodes (nginx with one worker each, on the host) sharing one Redis.
 * Probed from outside: a node holds when its metrics say the scope is paused (the hot
 * path reads the same shared-dict key), as of the `since` its status gives; a node
 * forwards again when it sends the request it held upstream (X-Node-Sent; the backend's
 * arrival time is kept beside it). Every time is from the moment the control request is
 * sent to node 0; all clocks are this host's.
 */
async function fleetRun(n: number): Promise<FleetResult> {
  const dir = path.join(WORK, `fleet-${n}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  execFileSync("redis-server", ["--port", String(REDIS_PORT), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
    "--daemonize", "yes", "--pidfile", path.join(dir, "redis.pid"), "--logfile", path.join(dir, "redis.log")]);
  const probeAgent = new http.Agent({ keepAlive: true, maxSockets: 2 });
  const get = (port: number, p: string, method = "GET", agentOpt: http.Agent | false = probeAgent) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request({ host: "127.0.0.1", port, path: p, method, agent: agentOpt }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on("error", reject);
      req.end();
    });
  const ports = Array.from({ length: n }, (_, i) => FLEET_PORT_BASE + i);
  const setup = { store: "redis", redis: { host: "127.0.0.1", port: REDIS_PORT, prefix: "benchfleet" }, pause_ttl: 60, max_hold: 60 };
  const backend = PlainNginx.start(path.join(dir, "backend"), fleetBackendConfig(path.join(dir, "backend")));
  const nodes: PlainNginx[] = [];
  const metric = (body: string, name: string) => Number(body.match(new RegExp(`^${name} (\\S+)$`, "m"))?.[1] ?? NaN);
  const modeOf = async (port: number) => {
    const body = (await get(port, "/_intermission/metrics")).body;
    for (const m of ["paused", "maintenance", "draining", "running"]) {
      if (metric(body, `intermission_state{scope="default",state="${m}"}`) === 1) return m;
    }
    return "unknown";
  };
  const heldOn = async (port: number) => metric((await get(port, "/_intermission/metrics")).body, 'intermission_held{scope="default"}');
  /** Polls each node until `done`, recording ms since t0 at the answer that showed it. */
  const pollAll = async (t0: number, done: (port: number) => Promise<boolean>, what: string) => {
    const at = new Map<number, number>();
    let pending = [...ports];
    let rounds = 0;
    while (pending.length > 0) {
      if (performance.now() - t0 > 10_000) throw new Error(`bench: ${what}: ${pending.length} of ${n} nodes not there after 10 s`);
      const results = await Promise.all(pending.map(async (port) => [port, await done(port)] as const));
      const now = performance.now();
      for (const [port, ok] of results) if (ok) at.set(port, now - t0);
      pending = pending.filter((port) => !at.has(port));
      rounds++;
    }
    if (process.env.BENCH_DEBUG) console.log(what, rounds, "rounds", Math.round(performance.now() - t0), "ms");
    return [...at.values()];
  };
  try {
    for (const [i, port] of ports.entries()) {
      const d = path.join(dir, `node${i}`);
      nodes.push(PlainNginx.start(d, fleetNodeConfig({ root: SNAPSHOT, dir: d, port, setup })));
    }
    await until(`${n} nodes`, async () => (await Promise.all(ports.map(modeOf))).every((m) => m === "running"));
    const pauseToNode: number[] = [];
    const pauseToAll: number[] = [];
    const resumeToNode: number[] = [];
    const resumeToAll: number[] = [];
    const resumeToBackend: number[] = [];
    // The nodes' times are wall-clock readings (ngx.now()). performance.timeOrigin is read
    // once, and this host's clock is stepped and slewed while a run lasts (tens of seconds
    // have been seen): read the wall clock itself every time.
    const wallMs = () => Date.now();
    const statsBefore = commandStatsWithTime();
    for (let round = 0; round < FLEET_ROUNDS; round++) {
      // Pause: each node's status says when it wrote the pause into its shared dict (the
      // key its hot path reads; all nodes share this host's clock). The metrics poll
      // checks from outside that every node holds.
      let t0 = wallMs();
      const paused = await get(ports[0], "/_intermission/pause", "POST");
      if (paused.status !== 200) throw new Error(`bench: pause answered ${paused.status}: ${paused.body}`);
      // The check from outside waits a little, so that its own requests do not compete
      // for the CPU with the nodes it measures (the times come from the nodes' records).
      await new Promise((r) => setTimeout(r, 200));
      await pollAll(performance.now(), async (port) => (await modeOf(port)) === "paused", "pause");
      const pausedAt = await Promise.all(ports.map(async (port) => {
        const s = JSON.parse((await get(port, "/_intermission/status")).body);
        if (s.state !== "paused" || typeof s.since !== "number") throw new Error(`bench: node ${port} says ${s.state}`);
        return s.since * 1000 - t0;
      }));
      pauseToNode.push(...pausedAt);
      pauseToAll.push(Math.max(...pausedAt));
      // Resume: one held request per node; the backend answers with the time it arrived.
      const held = ports.map((port) => get(port, "/", "GET", false));
      await pollAll(performance.now(), async (port) => (await heldOn(port)) === 1, "held");
      t0 = wallMs();
      const resumed = await get(ports[0], "/_intermission/resume", "POST");
      if (resumed.status !== 200) throw new Error(`bench: resume answered ${resumed.status}: ${resumed.body}`);
      const forwardedAt: number[] = [];
      for (const r of await Promise.all(held)) {
        if (r.status !== 200) throw new Error(`bench: a held request got ${r.status}`);
        const [arrived, sent] = r.body.trim().split(" ").map(Number);
        if (!Number.isFinite(arrived) || !Number.isFinite(sent)) throw new Error(`bench: the backend answered ${r.body}`);
        forwardedAt.push(sent * 1000 - t0);
        resumeToBackend.push(arrived * 1000 - t0);
      }
      resumeToNode.push(...forwardedAt);
      resumeToAll.push(Math.max(...forwardedAt));
      await pollAll(performance.now(), async (port) => (await modeOf(port)) === "running", "running");
    }
    const statsAfter = commandStatsWithTime();
    const publishCalls = (statsAfter.calls.get("publish") ?? 0) - (statsBefore.calls.get("publish") ?? 0);
    const publishUsec = (statsAfter.usec.get("publish") ?? 0) - (statsBefore.usec.get("publish") ?? 0);
    // Redis's cost: idle (every node has seen the scope), then with the scope paused.
    const idle = await commandRate(n, FLEET_RATE_SECONDS);
    await get(ports[0], "/_intermission/pause", "POST");
    await pollAll(performance.now(), async (port) => (await modeOf(port)) === "paused", "pause");
    const paused = await commandRate(n, FLEET_RATE_SECONDS);
    await get(ports[0], "/_intermission/resume", "POST");
    for (const node of nodes) {
      const bad = node.errorLog().split("\n").filter((l) => /\[(error|crit|alert|emerg)\]/.test(l));
      if (bad.length > 0) throw new Error(`bench: errors in ${node.dir}/error.log:\n${bad.slice(0, 5).join("\n")}`);
    }
    return {
      nodes: n, rounds: FLEET_ROUNDS,
      pause_to_node: spread(pauseToNode), pause_to_all: spread(pauseToAll),
      resume_to_node: spread(resumeToNode), resume_to_all: spread(resumeToAll), resume_to_backend: spread(resumeToBackend),
      commands_per_node_s_idle: idle.total, commands_per_node_s_paused: paused.total, commands_by_name_idle: idle.byName,
      publish_usec: round(publishUsec / Math.max(1, publishCalls), 1),
    };
  } finally {
    probeAgent.destroy();
    const pids = [...nodes, backend].map((x) => x.signalStop()).filter((p) => p > 0);
    const deadline = Date.now() + 10_000;
    for (const pid of pids) {
      while (Date.now() < deadline) {
        try {
          process.kill(pid, 0);
        } catch {
          break;
        }
        execFileSync("sleep", ["0.05"]);
      }
    }
    try {
      process.kill(Number(readFileSync(path.join(dir, "redis.pid"), "utf8")), "SIGTERM");
    } catch {
      // not running
    }
    await until("Redis gone", async () => {
      try {
        execFileSync("redis-cli", ["-p", String(REDIS_PORT), "PING"], { stdio: "ignore" });
        return false;
      } catch {
        return true;
      }
    }, 10_000);
  }
}

function fleetTable(results: FleetResult[]): string[][] {
  const rows: string[][] = [["fleet on one Redis (1 worker per node)", ...results.map((r) => `N=${r.nodes}`)]];
  const ms = (s: Spread) => `${s.p50_ms} / ${s.p99_ms} / ${s.max_ms}`;
  rows.push(["pause -> a node holding, p50 / p99 / max (ms)", ...results.map((r) => ms(r.pause_to_node))]);
  rows.push(["pause -> every node holding, p50 / p99 / max (ms)", ...results.map((r) => ms(r.pause_to_all))]);
  rows.push(["resume -> a node forwarding, p50 / p99 / max (ms)", ...results.map((r) => ms(r.resume_to_node))]);
  rows.push(["resume -> every node forwarding, p50 / p99 / max (ms)", ...results.map((r) => ms(r.resume_to_all))]);
  rows.push(["resume -> a request at the backend, p50 / p99 / max (ms)", ...results.map((r) => ms(r.resume_to_backend))]);
  rows.push(["Redis commands per node per second, idle", ...results.map((r) => String(r.commands_per_node_s_idle))]);
  rows.push(["Redis commands per node per second, paused", ...results.map((r) => String(r.commands_per_node_s_paused))]);
  rows.push(["Redis time per change published to every node (us)", ...results.map((r) => String(r.publish_usec))]);
  return rows;
}

/** Prints rows as a Markdown table (the console's view; the README's come from bench/tables.ts). */
function printTable(rows: string[][]): void {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const line = (r: string[]) => `| ${r.map((v, c) => v.padEnd(widths[c])).join(" | ")} |`;
  console.log(line(rows[0]));
  console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
  for (const r of rows.slice(1)) console.log(line(r));
}

function printRelease(release: (ReleaseResult & { release_vs_burst_min: number; release_vs_burst_max: number })[]): void {
  const rows: string[][] = [["measure", ...release.map((r) => `N=${r.n}`)]];
  rows.push(["plain burst, no intermission (ms)", ...release.map((r) => String(r.plain_burst_ms))]);
  rows.push(["release after resume (ms)", ...release.map((r) => String(r.release_ms))]);
  rows.push(["release / plain burst (median round)", ...release.map((r) => String(r.release_vs_burst))]);
  rows.push(["release / plain burst, min to max", ...release.map((r) => `${r.release_vs_burst_min} to ${r.release_vs_burst_max}`)]);
  rows.push(["nginx CPU: plain burst / release (ms)", ...release.map((r) => `${r.plain_burst_cpu_ms} / ${r.release_cpu_ms}`)]);
  rows.push(["bare hold (floor): release after resume (ms)", ...release.map((r) => String(r.floor?.release_ms ?? "-"))]);
  rows.push(["bare hold (floor): release / its plain burst", ...release.map((r) => String(r.floor?.release_vs_burst ?? "-"))]);
  rows.push(["bare hold (floor): nginx CPU, release (ms)", ...release.map((r) => String(r.floor?.release_cpu_ms ?? "-"))]);
  rows.push(["release / the bare hold's release", ...release.map((r) => String(r.release_vs_floor ?? "-"))]);
  rows.push(["upstream order, Spearman rho", ...release.map((r) => String(r.order_spearman))]);
  rows.push(["arrivals in exact hold order", ...release.map((r) => `${round(r.in_order_fraction * 100, 2)}%`)]);
  rows.push(["failed requests", ...release.map((r) => String(r.failed))]);
  rows.push(["worker RSS per 1,000 held (KiB)", ...release.map((r) => String(r.rss_kib_per_1000))]);
  rows.push(["queue-zone keys: before / held / released", ...release.map((r) => `${r.queue_keys.before} / ${r.queue_keys.held} / ${r.queue_keys.released}`)]);
  rows.push(["state-zone keys: before / held / released", ...release.map((r) => `${r.state_keys.before} / ${r.state_keys.held} / ${r.state_keys.released}`)]);
  console.log();
  printTable(rows);
}

function printHot(hot: HotResult): void {
  console.log("\nunpaused hot path, against empty access/log hooks:");
  console.log(`  wrk, 32 connections:            ${hot.wrk_intermission_rps} vs ${hot.wrk_empty_rps} req/s (${hot.wrk_cost_pct}% fewer)`);
  for (const c of hot.callgrind) {
    const what = c.hooks === "wiring only" ? "wiring only, " : "";
    console.log(`  callgrind, ${String(c.concurrency).padStart(2)} connection(s), ${what}${(c.content ?? "proxy").padEnd(9)}: ${c.instructions_per_request_intermission} vs ` +
      `${c.instructions_per_request_empty_hooks} instructions/request (+${c.hook_instructions}, ${c.cost_pct}%; ` +
      `median of ${c.runs} runs, ${c.hook_instructions_min} to ${c.hook_instructions_max})`);
  }
  const inPlace = hot.callgrind.find((c) => c.concurrency === 1 && c.content === "empty_gif" && c.hooks !== "wiring only");
  const floor = hot.callgrind.find((c) => c.concurrency === 1 && c.hooks === "wiring only");
  if (inPlace !== undefined && floor !== undefined) {
    console.log(`  answered in place, one connection: ${round(1 + inPlace.cost_pct / 100, 3)}x empty hooks; goal <= ${HOT_GOAL}x (issue 23): ` +
      `${1 + inPlace.cost_pct / 100 <= HOT_GOAL ? "met" : "NOT met"}; the wiring alone (the hook lines calling empty functions) is ${round(1 + floor.cost_pct / 100, 3)}x`);
  }
}

function printSteady(steady: SteadyResult): void {
  console.log(`\nsteady load across a pause (${steady.connections} connections, 20 ms backend, release_window ${steady.window}): ` +
    `${steady.before_rps} req/s before, ${steady.after_rps} req/s 1-5 s after the resume (${steady.after_vs_before}x); ` +
    `draining ended ${steady.drain_end_ms} ms after the resume; ${steady.failed} failed`);
}

interface HotResult {
  wrk_empty_rps: number;
  wrk_intermission_rps: number;
  wrk_cost_pct: number;
  wrk_rounds: number;
  wrk_seconds: number;
  callgrind: CallgrindResult[];
}

/** The sections, in the order a full run takes them; each returns what its results file keeps. */
const SECTIONS: { [name: string]: () => Promise<{ [k: string]: unknown }> } = {
  release: async () => {
    // The stored run this one replaces, kept beside it: the README shows before and after.
    const stored = readResults(ROOT, "release");
    const previous = stored === undefined ? undefined : {
      commit: stored.commit, dirty: stored.dirty, date: stored.date,
      release: (stored.release as ReleaseResult[]).map((x) => ({ n: x.n, plain_burst_ms: x.plain_burst_ms, release_ms: x.release_ms, release_vs_burst: x.release_vs_burst })),
    };
    // Rounds interleaved across the sizes, so that drift on a shared box hits them alike;
    // each size keeps its median round (by release ÷ plain burst) and the spread.
    const all: ReleaseResult[][] = SIZES.map(() => []);
    for (let round = 1; round <= RELEASE_ROUNDS; round++) {
      for (const [i, n] of SIZES.entries()) {
        process.stdout.write(`  release, N = ${n}, round ${round} of ${RELEASE_ROUNDS} ... `);
        const run = await releaseRun(n);
        run.floor = await floorRun(n);
        run.release_vs_floor = Math.round((run.release_ms / run.floor.release_ms) * 100) / 100;
        all[i].push(run);
        console.log(`${run.release_vs_burst} (the bare hold's ${run.floor.release_vs_burst})`);
      }
    }
    const release = all.map((runs) => {
      const sorted = [...runs].sort((a, b) => a.release_vs_burst - b.release_vs_burst);
      const median = sorted[Math.floor((sorted.length - 1) / 2)];
      return { ...median, rounds: runs.length, release_vs_burst_min: sorted[0].release_vs_burst,
        release_vs_burst_max: sorted[sorted.length - 1].release_vs_burst };
    });
    printRelease(release);
    for (const r of release) {
      console.log(`  N = ${r.n}: release ÷ plain burst ${r.release_vs_burst} (median of ${r.rounds}, ${r.release_vs_burst_min} to ${r.release_vs_burst_max}); ` +
        `goal ≤ ${RELEASE_GOAL} (issue 23): ${r.release_vs_burst <= RELEASE_GOAL ? "met" : "NOT met"}` +
        (previous ? `; the stored run at ${previous.commit.slice(0, 7)}: ${previous.release.find((p) => p.n === r.n)?.release_vs_burst ?? "-"}` : ""));
    }
    return { workers: WORKERS, release_window: WINDOW, rounds: RELEASE_ROUNDS, goal_release_vs_burst: RELEASE_GOAL, release, previous };
  },
  hot: async () => {
    process.stdout.write("  hot path (wrk) ... ");
    const wrkResult = await hotPath();
    console.log("done");
    process.stdout.write("  hot path (callgrind, 16 connections and 1, proxied and answered in place) ... ");
    const callgrind: CallgrindResult[] = [];
    // Proxied: the request as a site runs it (the backend is nginx in the same process,
    // so its work is in both figures). In place (empty_gif): nginx's own per-request work
    // alone, the smallest denominator, where the hooks' share is largest.
    for (const content of ["proxy", "empty_gif"] as const) {
      for (const c of [16, 1]) callgrind.push(await callgrindPerRequest(SNAPSHOT, path.join(WORK, "callgrind"), c, benchConfig, { content }));
    }
    // The floor: the same hook lines calling functions that do nothing, answered in place.
    const wiring = wiringOnlyRoot(SNAPSHOT, path.join(WORK, "callgrind"));
    for (const c of [16, 1]) {
      callgrind.push(await callgrindPerRequest(wiring, path.join(WORK, "callgrind"), c, benchConfig, { content: "empty_gif", hooks: "wiring only" }));
    }
    console.log("done");
    const hot: HotResult = { ...wrkResult, callgrind };
    printHot(hot);
    return { workers: WORKERS, hot_path: hot };
  },
  steady: async () => {
    process.stdout.write("  steady load across a pause ... ");
    const steady = await steadyAcrossPause();
    console.log("done");
    printSteady(steady);
    return { workers: WORKERS, steady_across_pause: steady };
  },
  fleet: async () => {
    const fleet: FleetResult[] = [];
    for (const n of FLEET_SIZES) {
      process.stdout.write(`  fleet, ${n} nodes on one Redis ... `);
      fleet.push(await fleetRun(n));
      console.log("done");
    }
    console.log(`\nfleet, ${FLEET_ROUNDS} pause/resume rounds per size:`);
    printTable(fleetTable(fleet));
    return { rounds: FLEET_ROUNDS, rate_seconds: FLEET_RATE_SECONDS, fleet };
  },
  database: async () => ({ ...(await databaseScenarios()) }),
  unplanned: async () => ({ ...(await unplannedScenarios()) }),
};

async function main(): Promise<void> {
  const unknown = [...(ONLY ?? [])].filter((s) => !(s in SECTIONS));
  if (unknown.length > 0) throw new Error(`BENCH_ONLY: no section ${unknown.join(", ")}; the sections are ${Object.keys(SECTIONS).join(", ")}`);
  rmSync(WORK, { recursive: true, force: true });
  mkdirSync(WORK, { recursive: true });
  // Run from a snapshot of dist/ and nginx/, so a rebuild meanwhile cannot touch the run.
  cpSync(path.join(ROOT, "dist"), path.join(SNAPSHOT, "dist"), { recursive: true });
  cpSync(path.join(ROOT, "nginx"), path.join(SNAPSHOT, "nginx"), { recursive: true });
  // The commit is read before anything is written, so this run's own results do not count as changes.
  const at = commitOf(ROOT);
  console.log(`intermission bench: ${describeMachine(machine())}; commit ${at.commit.slice(0, 7)}${at.dirty ? " with uncommitted changes" : ""}; ` +
    `nginx with ${WORKERS} workers; release_window ${WINDOW}${SAVE ? "" : "; BENCH_SAVE=0: nothing is saved"}`);
  const dir = path.join(ROOT, "bench/results");
  mkdirSync(dir, { recursive: true });
  const took: [string, number][] = [];
  for (const [name, run] of Object.entries(SECTIONS)) {
    if (!wanted(name)) continue;
    console.log(`\n[bench] ${name}`);
    const t0 = performance.now();
    const data = await run();
    const seconds = Math.round((performance.now() - t0) / 1000);
    took.push([name, seconds]);
    console.log(`[bench] ${name}: ${seconds} s`);
    if (!SAVE) continue;
    const file = path.join(dir, `${name}.json`);
    writeFileSync(file, JSON.stringify({ section: name, ...provenance(at), seconds, ...data }, null, 2) + "\n");
    console.log(`[bench] results: ${path.relative(ROOT, file)}`);
    if (name === "release") {
      await plotRelease(file, path.join(dir, "release-timeline.svg"));
      console.log("[bench] plot: bench/results/release-timeline.svg");
    }
    if (name === "database") await plotDatabase(ROOT);
  }
  if (SAVE) {
    const changed = writeReadmeTables(ROOT);
    console.log(`\n[bench] README.md: ${changed.length > 0 ? `rewrote ${changed.join(", ")}` : "tables unchanged"}`);
  }
  console.log(`[bench] time per section: ${took.map(([n, s]) => `${n} ${s} s`).join(", ")}`);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
