// npm run bench: measures intermission against nginx without it, on this machine, in
// one run, and prints one table. Results go to bench/results/ as JSON.
//
//   release   N held requests: time from the resume call to the last response, against
//             the same N sent as one plain burst through nginx without intermission;
//             the order they reached the upstream (Spearman rank correlation with the
//             hold order, from the tickets in error.log).
//   memory    worker RSS and shared-dict growth per 1,000 held requests.
//   hot path  unpaused cost: wrk throughput against an empty access/log hook, and
//             instructions per request under callgrind (repeatable on a noisy box).
//   database  the four real-PostgreSQL maintenances of test/database.test.ts, longer,
//             with and without intermission (in containers; see bench/database.ts).
import http from "node:http";
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync, rmSync, cpSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BenchNginx, PORTS, PORTS_B, benchConfig } from "./nginx.ts";
import { callgrindPerRequest } from "./callgrind.ts";
import { plotRelease } from "./plot.ts";
import { databaseScenarios, plotDatabase } from "./database.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const WORK = path.join(os.tmpdir(), "intermission-bench");
const SNAPSHOT = path.join(WORK, "snapshot");
const SIZES = (process.env.BENCH_SIZES ?? "1000,3000,10000").split(",").map(Number);
const WINDOW = Number(process.env.BENCH_WINDOW ?? 64);
const WORKERS = 2;
/**
 * BENCH_ONLY=release,fleet,hot,database runs some sections (for development); such a run
 * saves nothing, except the database section, which keeps its own results file.
 */
const ONLY = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.split(",")) : undefined;
const wanted = (section: string) => ONLY === undefined || ONLY.has(section);

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
  order_spearman: number;
  in_order_fraction: number;
  failed: number;
  rss_kib_per_1000: number;
  shm_kib_per_1000: number;
  /** Released tickets keep two small keys for max_hold + 60 s. */
  shm_kib_per_1000_released: number;
  /** Status samples through the cycle; t in ms since the resume call. */
  timeline: { t: number; held: number; queued: number; in_flight: number }[];
}

async function releaseRun(n: number): Promise<ReleaseResult> {
  const dir = path.join(WORK, `release-${n}`);
  rmSync(dir, { recursive: true, force: true });
  const nginx = BenchNginx.start({
    root: SNAPSHOT, dir, workers: WORKERS,
    setup: { max_held: n + 100, release_window: WINDOW, max_hold: 300, pause_ttl: 0 },
  });
  try {
    await until("nginx", async () => (await status()).state === "running");
    // Warm up both paths so neither pays first-use costs in the measurement.
    await burst(PORTS.plain, 200, "");
    await burst(PORTS.intermission, 200, "");
    const plain = await burst(PORTS.plain, n, "");

    const rssBefore = nginx.workersRssKiB();
    const before = await status();
    await request(PORTS.intermission, "/_intermission/pause", "POST", false);
    const t0 = performance.now();
    const held = Array.from({ length: n }, () => request(PORTS.intermission, "/?record=1"));
    await until(`${n} held`, async () => (await status()).held === n);
    const heldAt = await status();
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
    await request(PORTS.intermission, "/_intermission/resume", "POST", false);
    const replies = await Promise.allSettled(held);
    const releaseMs = performance.now() - resumeAt;
    sampling = false;
    await sampler;
    const failed = replies.filter((r) => r.status === "rejected" || r.value.status !== 200).length;
    const afterRelease = await status();

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

    const shmUsed = (s: any) => s.shared_dict.state.capacity_kib - s.shared_dict.state.free_kib +
      s.shared_dict.queue.capacity_kib - s.shared_dict.queue.free_kib;
    return {
      n,
      plain_burst_ms: round(plain.ms),
      release_ms: round(releaseMs),
      release_vs_burst: round(releaseMs / plain.ms, 3),
      order_spearman: round(spearman(xs), 5),
      in_order_fraction: round(inOrder, 4),
      failed: failed + plain.failed + (xs.length === n ? 0 : n - xs.length),
      rss_kib_per_1000: round(((rssHeld - rssBefore) / n) * 1000),
      shm_kib_per_1000: round(((shmUsed(heldAt) - shmUsed(before)) / n) * 1000),
      shm_kib_per_1000_released: round(((shmUsed(afterRelease) - shmUsed(before)) / n) * 1000),
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

async function hotPath(): Promise<{ wrk_empty_rps: number; wrk_intermission_rps: number; wrk_cost_pct: number }> {
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
    for (let i = 0; i < 5; i++) {
      empty.push(wrk(PORTS.empty, 3));
      ours.push(wrk(PORTS.intermission, 3));
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const e = median(empty);
    const o = median(ours);
    return { wrk_empty_rps: round(e), wrk_intermission_rps: round(o), wrk_cost_pct: round(((e - o) / e) * 100, 2) };
  } finally {
    agent.destroy();
    nginx.stop();
  }
}

const REDIS_PORT = 16379;

function percentile(xs: number[], p: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/**
 * Fleet propagation: two nodes sharing a Redis on this host. The time from node A's
 * answer to a pause to node B's status saying paused (B's hot path reads the same
 * shared dict its status does), over 50 pauses.
 */
async function fleetPropagation(): Promise<{ pauses: number; median_ms: number; p99_ms: number; max_ms: number }> {
  const dir = path.join(WORK, "fleet");
  mkdirSync(dir, { recursive: true });
  execFileSync("redis-server", ["--port", String(REDIS_PORT), "--bind", "127.0.0.1", "--save", "", "--daemonize", "yes",
    "--pidfile", path.join(dir, "redis.pid"), "--logfile", path.join(dir, "redis.log")]);
  const setup = { store: "redis", redis: { host: "127.0.0.1", port: REDIS_PORT, prefix: `bench${Date.now()}` }, pause_ttl: 60 };
  const a = BenchNginx.start({ root: SNAPSHOT, dir: path.join(dir, "a"), workers: WORKERS, setup });
  const b = BenchNginx.start({ root: SNAPSHOT, dir: path.join(dir, "b"), workers: WORKERS, setup, ports: PORTS_B });
  const stateOf = async (port: number) =>
    JSON.parse((await request(port, "/_intermission/status", "GET", false)).body).state as string;
  try {
    await until("both nodes", async () => (await stateOf(PORTS.intermission)) === "running" &&
      (await stateOf(PORTS_B.intermission)) === "running");
    const samples: number[] = [];
    for (let i = 0; i < 50; i++) {
      await request(PORTS.intermission, "/_intermission/pause", "POST", false);
      const answered = performance.now();
      while ((await stateOf(PORTS_B.intermission)) !== "paused") {
        if (performance.now() - answered > 5000) throw new Error("bench: pause did not reach node B in 5 s");
      }
      samples.push(performance.now() - answered);
      await request(PORTS.intermission, "/_intermission/resume", "POST", false);
      await until("B running", async () => (await stateOf(PORTS_B.intermission)) === "running");
    }
    return { pauses: samples.length, median_ms: round(percentile(samples, 50), 2), p99_ms: round(percentile(samples, 99), 2),
      max_ms: round(Math.max(...samples), 2) };
  } finally {
    agent.destroy();
    a.stop();
    b.stop();
    try {
      process.kill(Number(readFileSync(path.join(dir, "redis.pid"), "utf8")), "SIGTERM");
    } catch {
      // not running
    }
  }
}

async function main(): Promise<void> {
  rmSync(WORK, { recursive: true, force: true });
  mkdirSync(WORK, { recursive: true });
  // Run from a snapshot of dist/ and nginx/, so a rebuild meanwhile cannot touch the run.
  cpSync(path.join(ROOT, "dist"), path.join(SNAPSHOT, "dist"), { recursive: true });
  cpSync(path.join(ROOT, "nginx"), path.join(SNAPSHOT, "nginx"), { recursive: true });
  const machine = `${os.cpus().length} cores, ${os.cpus()[0]?.model ?? "?"}, ${Math.round(os.totalmem() / 2 ** 30)} GiB`;
  console.log(`intermission bench: ${machine}; nginx with ${WORKERS} workers; release_window ${WINDOW}`);

  const release: ReleaseResult[] = [];
  for (const n of wanted("release") ? SIZES : []) {
    process.stdout.write(`  release, N = ${n} ... `);
    release.push(await releaseRun(n));
    console.log("done");
  }
  process.stdout.write("  fleet propagation (2 nodes, Redis) ... ");
  const fleet = wanted("fleet") ? await fleetPropagation() : { pauses: 0, median_ms: NaN, p99_ms: NaN, max_ms: NaN };
  console.log("done");
  process.stdout.write("  hot path (wrk) ... ");
  const skipped = { wrk_empty_rps: NaN, wrk_intermission_rps: NaN, wrk_cost_pct: NaN };
  const hot = wanted("hot") ? await hotPath() : skipped;
  console.log("done");
  process.stdout.write("  hot path (callgrind, 16 connections and 1) ... ");
  const noCg = (c: number) => ({ concurrency: c, instructions_per_request_empty_hooks: NaN,
    instructions_per_request_intermission: NaN, hook_instructions: NaN, cost_pct: NaN });
  const cg16 = wanted("hot") ? await callgrindPerRequest(SNAPSHOT, path.join(WORK, "callgrind"), 16, benchConfig) : noCg(16);
  const cg1 = wanted("hot") ? await callgrindPerRequest(SNAPSHOT, path.join(WORK, "callgrind"), 1, benchConfig) : noCg(1);
  console.log("done");
  const database = wanted("database") ? await databaseScenarios(ROOT) : [];
  if (wanted("database")) await plotDatabase(ROOT);

  const result = {
    date: new Date().toISOString(),
    machine,
    commit: execFileSync("git", ["-C", ROOT, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim(),
    workers: WORKERS,
    release_window: WINDOW,
    release,
    hot_path: { ...hot, callgrind: [cg16, cg1] },
    fleet_propagation: fleet,
    database,
  };

  const rows: string[][] = [["measure", ...release.map((r) => `N=${r.n}`)]];
  rows.push(["plain burst, no intermission (ms)", ...release.map((r) => String(r.plain_burst_ms))]);
  rows.push(["release after resume (ms)", ...release.map((r) => String(r.release_ms))]);
  rows.push(["release / plain burst", ...release.map((r) => String(r.release_vs_burst))]);
  rows.push(["upstream order, Spearman rho", ...release.map((r) => String(r.order_spearman))]);
  rows.push(["arrivals in exact hold order", ...release.map((r) => `${round(r.in_order_fraction * 100, 2)}%`)]);
  rows.push(["failed requests", ...release.map((r) => String(r.failed))]);
  rows.push(["worker RSS per 1,000 held (KiB)", ...release.map((r) => String(r.rss_kib_per_1000))]);
  rows.push(["shared dict per 1,000 held (KiB)", ...release.map((r) => String(r.shm_kib_per_1000))]);
  rows.push(["shared dict per 1,000 released (KiB)", ...release.map((r) => String(r.shm_kib_per_1000_released))]);
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const line = (r: string[]) => `| ${r.map((v, c) => v.padEnd(widths[c])).join(" | ")} |`;
  console.log("\n" + line(rows[0]));
  console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
  for (const r of rows.slice(1)) console.log(line(r));
  console.log(`\nfleet propagation (pause answered on A -> B holding), ${fleet.pauses} pauses: ` +
    `median ${fleet.median_ms} ms, p99 ${fleet.p99_ms} ms, max ${fleet.max_ms} ms`);
  console.log("\nunpaused hot path, against empty access/log hooks:");
  console.log(`  wrk, 32 connections:            ${hot.wrk_intermission_rps} vs ${hot.wrk_empty_rps} req/s (${hot.wrk_cost_pct}% fewer)`);
  for (const c of [cg16, cg1]) {
    console.log(`  callgrind, ${String(c.concurrency).padStart(2)} connection(s):    ${c.instructions_per_request_intermission} vs ` +
      `${c.instructions_per_request_empty_hooks} instructions/request (+${c.hook_instructions}, ${c.cost_pct}%)`);
  }

  if (ONLY !== undefined) {
    console.log("\npartial run (BENCH_ONLY): results not saved");
    return;
  }
  const dir = path.join(ROOT, "bench/results");
  mkdirSync(dir, { recursive: true });
  const stamp = result.date.replace(/[:.]/g, "-");
  writeFileSync(path.join(dir, `${stamp}.json`), JSON.stringify(result, null, 2) + "\n");
  writeFileSync(path.join(dir, "latest.json"), JSON.stringify(result, null, 2) + "\n");
  await plotRelease(path.join(dir, "latest.json"), path.join(dir, "release-timeline.svg"));
  console.log(`\nresults: bench/results/latest.json (and ${stamp}.json); plot: bench/results/release-timeline.svg`);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
