// Instructions per request under callgrind: nginx as one process (no master) under
// valgrind, K requests on one keep-alive connection, twice with different K so the
// start-up and shutdown cost cancels out. Counts instructions, not seconds, so it
// repeats on a noisy machine.
import http from "node:http";
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { PORTS, Ports, BenchNginxOptions, stubRoot } from "./nginx.ts";

const K1 = 500;
const K2 = 8500;

function get(port: number, p: string, agent: http.Agent): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path: p, agent }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", reject);
  });
}

/** What the front servers do besides the hooks (see BenchNginxOptions), and on which ports. */
export interface CallgrindSetup {
  content?: BenchNginxOptions["content"];
  ports?: Ports;
  /** Which hooks `root` holds (for the result's label): see wiringOnlyRoot. */
  hooks?: CallgrindResult["hooks"];
}

/**
 * A root whose dist/ holds an intermission module with the public functions and nothing
 * in them (control() answers, for the start-up check): measured with the README's hook
 * lines, it gives what `require("intermission").access()` and `.log()` cost by
 * themselves, over empty access_by_lua/log_by_lua blocks.
 */
export function wiringOnlyRoot(root: string, dir: string): string {
  return stubRoot(root, dir, "wiring-only", [
    "local M = {}",
    "function M.setup() end",
    "function M.init_worker() end",
    "function M.access() end",
    "function M.header_filter() end",
    "function M.log() end",
    "function M.control() ngx.say(\"{}\") end",
    "return M",
    "",
  ].join("\n"));
}

async function instructions(root: string, dir: string, which: "intermission" | "empty", k: number,
  concurrency: number, render: (o: BenchNginxOptions) => string, setup: CallgrindSetup): Promise<number> {
  const runDir = path.join(dir, `${which}-${setup.content ?? "proxy"}-${k}-c${concurrency}`);
  rmSync(runDir, { recursive: true, force: true });
  mkdirSync(runDir, { recursive: true });
  const conf = path.join(runDir, "nginx.conf");
  writeFileSync(conf, render({ root, dir: runDir, workers: 1, setup: {}, singleProcess: true, only: which,
    content: setup.content, ports: setup.ports }));
  const out = path.join(runDir, "callgrind.out");
  const child = spawn("valgrind", ["--tool=callgrind", "--smc-check=all-non-file", `--callgrind-out-file=${out}`,
    "nginx", "-c", conf], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (c) => (stderr += c));
  const exited = new Promise<number>((resolve) => child.on("exit", (code) => resolve(code ?? -1)));

  const port = (setup.ports ?? PORTS)[which];
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      await get(port, "/_intermission/status", agent);
      break;
    } catch {
      if (Date.now() > deadline) throw new Error(`nginx under valgrind did not start:\n${stderr}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  // `concurrency` keep-alive connections, each sending its share back to back.
  await Promise.all(Array.from({ length: concurrency }, async (_, c) => {
    for (let i = c; i < k; i += concurrency) {
      const s = await get(port, "/", agent);
      if (s !== 200) throw new Error(`callgrind run: status ${s}`);
    }
  }));
  agent.destroy();
  child.kill("SIGQUIT");
  const code = await exited;
  let text = "";
  try {
    text = readFileSync(out, "utf8");
  } catch {
    throw new Error(`valgrind exited ${code} without output:\n${stderr.slice(-2000)}`);
  }
  const m = text.match(/^(?:summary|totals):\s+(\d+)/m);
  if (!m) throw new Error("no totals in callgrind output");
  return Number(m[1]);
}

export interface CallgrindResult {
  concurrency: number;
  /**
   * "intermission" (absent in older results), or "wiring only": the same hook lines
   * calling a module whose functions do nothing (wiringOnlyRoot), so that the figure is
   * what the wiring itself costs, the floor under intermission's own.
   */
  hooks?: "intermission" | "wiring only";
  /** The location's content: "proxy" to the backend (nginx in the same process) or "empty_gif" (in place). */
  content: NonNullable<BenchNginxOptions["content"]>;
  instructions_per_request_empty_hooks: number;
  instructions_per_request_intermission: number;
  hook_instructions: number;
  cost_pct: number;
  /** Repeats (BENCH_CALLGRIND_RUNS, default 3): the figures above are the median run's. */
  runs: number;
  hook_instructions_min: number;
  hook_instructions_max: number;
}

/**
 * The hooks' instructions per request, as the median of `runs` repeats: LuaJIT compiles
 * traces differently from run to run (which trace a side exit links to, when the GC
 * steps), which moves one run's figure by a few hundred instructions.
 */
export async function callgrindPerRequest(root: string, dir: string, concurrency: number,
  render: (o: BenchNginxOptions) => string, setup: CallgrindSetup = {},
  runs = Number(process.env.BENCH_CALLGRIND_RUNS ?? 3)): Promise<CallgrindResult> {
  const perRequest = async (which: "intermission" | "empty") =>
    ((await instructions(root, dir, which, K2, concurrency, render, setup)) -
      (await instructions(root, dir, which, K1, concurrency, render, setup))) / (K2 - K1);
  const all: { empty: number; ours: number }[] = [];
  for (let i = 0; i < runs; i++) all.push({ empty: await perRequest("empty"), ours: await perRequest("intermission") });
  const costs = all.map((r) => r.ours - r.empty).sort((a, b) => a - b);
  const median = all.find((r) => r.ours - r.empty === costs[Math.floor((costs.length - 1) / 2)])!;
  return {
    concurrency,
    hooks: setup.hooks ?? "intermission",
    content: setup.content ?? "proxy",
    instructions_per_request_empty_hooks: Math.round(median.empty),
    instructions_per_request_intermission: Math.round(median.ours),
    hook_instructions: Math.round(median.ours - median.empty),
    cost_pct: Math.round(((median.ours - median.empty) / median.empty) * 10000) / 100,
    runs,
    hook_instructions_min: Math.round(costs[0]),
    hook_instructions_max: Math.round(costs[costs.length - 1]),
  };
}
