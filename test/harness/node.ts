// A real nginx node in a container (testcontainers), running dist/ from the image,
// with the Test::Nginx habit: its error.log is checked after every test.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { GenericContainer, Network, StartedTestContainer, StartedNetwork, Wait } from "testcontainers";
import { ConfigOptions, nginxConfig } from "./nginx-config.ts";
import { IMAGE } from "./install.ts";
import { get, post, Reply, send, PendingRequest, waitFor } from "./http.ts";

process.env.TESTCONTAINERS_RYUK_DISABLED ??= "true";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export { IMAGE } from "./install.ts";
const CONF = "/etc/intermission/nginx.conf";
const ERROR_LOG = "/var/log/nginx/error.log";

let imagesReady = false;
/** Builds (or refreshes from cache) the images once per test process. */
export function ensureImages(): void {
  // scripts/test.sh builds them once before the suite and says so: not once per file.
  if (imagesReady || process.env.INTERMISSION_IMAGES_READY === "1") return;
  execFileSync("bash", [path.join(ROOT, "scripts/images.sh")], { stdio: ["ignore", "ignore", "inherit"] });
  imagesReady = true;
}

/** Lines that fail a test unless the test says it expects them. */
export const ALARMING = /\[(error|crit|alert|emerg)\]|runtime error|_G write guard/;

export interface NodeOptions extends ConfigOptions {
  network?: StartedNetwork;
  alias?: string;
  /** More files to put in the container (e.g. a second nginx's config). */
  files?: { content: string; target: string }[];
}

export class NginxNode {
  private logOffset = 0;
  /** Sent with every control request the harness makes (e.g. the bearer token). */
  controlHeaders: Record<string, string> = {};

  /** base: the front server (intermission); backend: the recording upstream, direct. */
  constructor(readonly container: StartedTestContainer, readonly base: string, readonly backend: string) {}

  static async start(opts: NodeOptions = {}): Promise<NginxNode> {
    ensureImages();
    let builder = new GenericContainer(IMAGE)
      .withCopyContentToContainer([{ content: nginxConfig(opts), target: CONF }, ...(opts.files ?? [])])
      .withCommand(["nginx", "-c", CONF, "-g", "daemon off;"])
      .withExposedPorts(8080, 8081)
      .withWaitStrategy(Wait.forHttp("/_backend/arrivals", 8081).forStatusCode(200))
      .withStartupTimeout(30_000);
    if (opts.network) builder = builder.withNetwork(opts.network);
    if (opts.alias) builder = builder.withNetworkAliases(opts.alias);
    const container = await builder.start();
    const host = container.getHost();
    return new NginxNode(container, `http://${host}:${container.getMappedPort(8080)}`, `http://${host}:${container.getMappedPort(8081)}`);
  }

  url(p: string): string {
    return this.base + p;
  }

  get(p: string, headers: Record<string, string> = {}): Promise<Reply> {
    return get(this.url(p), { headers });
  }

  send(p: string, headers: Record<string, string> = {}): PendingRequest {
    return send(this.url(p), { headers });
  }

  control(action: string, params = "", extra: Record<string, string> = {}): Promise<Reply> {
    const p = `/_intermission/${action}${params ? `?${params}` : ""}`;
    const headers = { ...this.controlHeaders, ...extra };
    return action === "status" || action === "metrics" ? this.get(p, headers) : post(this.url(p), undefined, headers);
  }

  async status(scope = "default"): Promise<any> {
    const r = await this.get(`/_intermission/status?scope=${scope}`, this.controlHeaders);
    assert.equal(r.status, 200, r.body);
    return r.json();
  }

  /** Waits until `n` requests are held in the scope. */
  async held(n: number, scope = "default"): Promise<void> {
    await waitFor(`${n} held in ${scope}`, async () => (await this.status(scope)).held === n);
  }

  /** What reached the upstream, in arrival order, and the concurrency each one saw. */
  async arrivals(): Promise<{ ids: string[]; concurrency: number[]; active: number }> {
    const raw = (await get(`${this.backend}/_backend/arrivals`)).json();
    // lua-cjson encodes an empty table as {}.
    const list = <T>(v: unknown): T[] => (Array.isArray(v) ? v : []);
    return { ids: list<string>(raw.ids), concurrency: list<number>(raw.concurrency), active: raw.active };
  }

  /** Every scope the tests use back to running, and the backend's record cleared. */
  async reset(): Promise<void> {
    for (const scope of ["default", "other", "seedapp"]) {
      const r = await post(this.url(`/_intermission/resume?scope=${scope}`), undefined, this.controlHeaders);
      assert.equal(r.status, 200, r.body);
    }
    await waitFor("no held requests", async () => (await this.status()).held === 0 && (await this.status("other")).held === 0);
    await this.resetBackend();
  }

  async resetBackend(): Promise<void> {
    await get(`${this.backend}/_backend/reset`);
  }

  async exec(cmd: string[]): Promise<string> {
    const r = await this.container.exec(cmd);
    assert.equal(r.exitCode, 0, `${cmd.join(" ")}: ${r.output}`);
    return r.output;
  }

  async errorLog(): Promise<string> {
    return (await this.container.exec(["cat", ERROR_LOG])).output;
  }

  /** The error.log lines written since the last check. */
  async newLogLines(): Promise<string[]> {
    const all = (await this.errorLog()).split("\n");
    const fresh = all.slice(this.logOffset);
    this.logOffset = all.length - 1;
    return fresh.filter((l) => l.trim() !== "");
  }

  /**
   * Fails on any [error]/[crit]/[alert]/[emerg], runtime error or _G write guard line
   * written since the last check, unless it matches one of `expected`.
   */
  async assertCleanLog(expected: RegExp[] = []): Promise<string[]> {
    const lines = await this.newLogLines();
    const bad = lines.filter((l) => ALARMING.test(l) && !expected.some((re) => re.test(l)));
    assert.deepEqual(bad, [], `unexpected lines in error.log:\n${bad.join("\n")}`);
    return lines;
  }

  /** nginx worker processes of an old generation still shutting down (after a reload). */
  async shuttingDownWorkers(): Promise<number> {
    const out = await this.exec(["sh", "-c", "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '; echo"]);
    return (out.match(/worker process is shutting down/g) ?? []).length;
  }

  async reload(): Promise<void> {
    await this.exec(["nginx", "-c", CONF, "-s", "reload"]);
  }

  async stop(): Promise<void> {
    await this.container.stop({ timeout: 2 });
  }
}

/** Redis in a container on `network`, reachable there as `alias`. */
export async function startRedis(network: StartedNetwork, alias = "redis"): Promise<StartedTestContainer> {
  ensureImages();
  return new GenericContainer("intermission-redis:latest")
    .withNetwork(network)
    .withNetworkAliases(alias)
    .withExposedPorts(6379)
    .withWaitStrategy(Wait.forLogMessage(/Ready to accept connections/))
    .start();
}

export async function newNetwork(): Promise<StartedNetwork> {
  return new Network().start();
}

/** Docker's embedded DNS, for nodes on a user-defined network. */
export const DOCKER_DNS = "127.0.0.11";
