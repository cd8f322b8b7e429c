// The real-database stack, all in containers on one network:
//
//   load (this process) -> front: intermission (nginx/nginx.conf, rewired to the app)
//                       -> plain: the same nginx without the intermission hooks
//                       -> nohold (optional): intermission with outage_hold = 0
//   front, plain -> app (HTTP, pg pool of 10) -> endpoint (TCP proxy, the "VIP")
//   endpoint -> primary (PostgreSQL 15)  ~~streaming~~> replica (pg_basebackup -R)
//
// Only the two fronts and the application's port are published (the CLI's --ready probe
// needs the latter); the maintenance scripts in examples/database/ reach the
// containers with docker exec, by name.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { GenericContainer, StartedNetwork, StartedTestContainer, Wait } from "testcontainers";
import { ensureImages, IMAGE, NginxNode, newNetwork, ROOT } from "./node.ts";
import { waitFor } from "./http.ts";

const run = promisify(execFile);
export const POSTGRES_IMAGE = "intermission-postgres:latest";
/** INTERMISSION_APP_IMAGE: another tag (scripts/images.sh builds the same name). */
export const APP_IMAGE = process.env.INTERMISSION_APP_IMAGE ?? "intermission-app:latest";
const CONF = "/etc/intermission/nginx.conf";

/** Replaces `from` (which must occur exactly once) in `text`, or says the sample changed. */
function replaceOnce(text: string, from: string | RegExp, to: string, what: string): string {
  const count = typeof from === "string" ? text.split(from).length - 1 : (text.match(new RegExp(from, "g")) ?? []).length;
  assert.equal(count, 1, `nginx/nginx.conf changed shape: expected one ${what}`);
  return text.replace(from, to);
}

/**
 * The repository's sample nginx/nginx.conf, rewired for the stack: its upstream is the
 * application, error.log is a file (the harness reads it), and the control API also
 * allows the Docker network's gateway (the CLI on this machine reaches the container
 * through a published port, so nginx sees the gateway's address, not loopback).
 * With hooks = false, the access/log hooks are removed: the same nginx without intermission.
 * outageHold, if given, is set in setup() (the sample leaves the default, 10 s).
 */
export function frontConfig(upstream: string, gateway: string, hooks: boolean, outageHold?: number): string {
  let conf = readFileSync(path.join(ROOT, "nginx/nginx.conf"), "utf8");
  conf = replaceOnce(conf, /(upstream backend \{\s*server )127\.0\.0\.1:8081;/, `$1${upstream};`, "upstream backend server");
  conf = replaceOnce(conf, "error_log /var/log/nginx/intermission-error.log notice;", "error_log /var/log/nginx/error.log notice;", "error_log");
  conf = replaceOnce(conf, /(location \/_intermission\/ \{\s*allow 127\.0\.0\.1;)/, `$1\n            allow ${gateway};`, "control location");
  if (outageHold !== undefined) {
    conf = replaceOnce(conf, /(\n([ \t]*)pause_ttl = 120,\n)/, `$1$2outage_hold = ${outageHold},\n`, "pause_ttl in setup()");
  }
  if (!hooks) {
    const hook = /^[ \t]*(access|log)_by_lua_block[ \t]*\{[ \t]*require\("intermission"\)\.(access|log)\(\)[ \t]*\}[ \t]*\n/gm;
    assert.equal(conf.match(hook)?.length, 2, "nginx/nginx.conf changed shape: expected one access and one log hook");
    conf = conf.replace(hook, "");
  }
  return conf;
}

/** Names of the stack's containers, as the maintenance scripts take them. */
export interface ScriptEnv {
  PRIMARY: string;
  REPLICA: string;
  ENDPOINT: string;
  APP: string;
}

export class DatabaseStack {
  /** Which postgres container is the primary now (switchovers swap them). */
  primary: StartedTestContainer;
  replica: StartedTestContainer;
  front!: NginxNode;
  /** The same nginx without the hooks (its error.log is checked too). */
  plain!: NginxNode;
  /** Intermission with outage_hold = 0 (started with `{ nohold: true }` only). */
  nohold?: NginxNode;

  private constructor(
    readonly network: StartedNetwork,
    readonly prefix: string,
    readonly pg: [StartedTestContainer, StartedTestContainer],
    readonly endpoint: StartedTestContainer,
    readonly app: StartedTestContainer,
  ) {
    [this.primary, this.replica] = pg;
  }

  /** nohold: also start the front with outage_hold = 0 (test/unplanned-database.test.ts). */
  static async start(opts: { nohold?: boolean } = {}): Promise<DatabaseStack> {
    ensureImages();
    const network = await newNetwork();
    // Names resolve on the network; unique per process so worktrees never collide.
    const prefix = `intermission-pg-${process.pid}-${Date.now().toString(36)}`;
    const started: StartedTestContainer[] = [];
    try {
      const postgres = (name: string, env: Record<string, string>) =>
        new GenericContainer(POSTGRES_IMAGE).withName(name).withNetwork(network).withEnvironment(env)
          .withWaitStrategy(Wait.forLogMessage(/pg-start: ready/)).withStartupTimeout(60_000);
      const a = await postgres(`${prefix}-a`, { PG_ROLE: "primary" }).start();
      started.push(a);
      const b = await postgres(`${prefix}-b`, { PG_ROLE: "replica", PG_PRIMARY: `${prefix}-a` }).start();
      started.push(b);
      const endpoint = await new GenericContainer(APP_IMAGE).withName(`${prefix}-endpoint`).withNetwork(network)
        .withCommand(["node", "/app/endpoint.js", `${prefix}-a:5432`])
        .withWaitStrategy(Wait.forLogMessage(/endpoint: ->/)).start();
      started.push(endpoint);
      const app = await new GenericContainer(APP_IMAGE).withName(`${prefix}-app`).withNetwork(network)
        // Boots in about a second, as real applications do (M3 restarts it); after a crash
        // (U2 kills it) its supervisor starts it again a second later.
        .withEnvironment({ PGHOST: `${prefix}-endpoint`, PGPORT: "5432", APP_BOOT_MS: "1000", APP_RESTART_DELAY_MS: "1000" })
        .withExposedPorts(3000).withWaitStrategy(Wait.forHttp("/healthz", 3000)).start();
      started.push(app);
      const stack = new DatabaseStack(network, prefix, [a, b], endpoint, app);
      const gateway = (await run("docker", ["network", "inspect", network.getName(), "-f", "{{(index .IPAM.Config 0).Gateway}}"])).stdout.trim();
      const front = async (hooks: boolean, outageHold?: number) => new GenericContainer(IMAGE)
        .withName(`${prefix}-${outageHold === 0 ? "nohold" : hooks ? "front" : "plain"}`)
        .withNetwork(network)
        .withCopyContentToContainer([{ content: frontConfig(`${prefix}-app:3000`, gateway, hooks, outageHold), target: CONF }])
        .withCommand(["nginx", "-c", CONF, "-g", "daemon off;"])
        .withExposedPorts(8080).withWaitStrategy(Wait.forHttp("/healthz", 8080)).withStartupTimeout(30_000).start();
      const f = await front(true);
      started.push(f);
      const p = await front(false);
      started.push(p);
      stack.front = new NginxNode(f, `http://127.0.0.1:${f.getMappedPort(8080)}`, "");
      stack.plain = new NginxNode(p, `http://127.0.0.1:${p.getMappedPort(8080)}`, "");
      if (opts.nohold) {
        const n = await front(true, 0);
        started.push(n);
        stack.nohold = new NginxNode(n, `http://127.0.0.1:${n.getMappedPort(8080)}`, "");
      }
      await stack.waitStreaming();
      return stack;
    } catch (e) {
      await Promise.all(started.map((c) => c.stop({ timeout: 1 }).catch(() => undefined)));
      await network.stop().catch(() => undefined);
      throw e;
    }
  }

  /** The intermission front, the plain front and the application, on loopback. */
  get frontUrl(): string {
    return this.front.base;
  }

  get plainUrl(): string {
    return this.plain.base;
  }

  get appUrl(): string {
    return `http://127.0.0.1:${this.app.getMappedPort(3000)}`;
  }

  get controlUrl(): string {
    return `${this.front.base}/_intermission`;
  }

  env(): ScriptEnv {
    return { PRIMARY: this.primary.getName().replace(/^\//, ""), REPLICA: this.replica.getName().replace(/^\//, ""),
      ENDPOINT: this.endpoint.getName().replace(/^\//, ""), APP: this.app.getName().replace(/^\//, "") };
  }

  /** One query as postgres in a container (database app); its rows, tab-separated. */
  async sql(container: StartedTestContainer, query: string): Promise<string> {
    const r = await container.exec(["psql", "-U", "postgres", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d", "app", "-c", query]);
    assert.equal(r.exitCode, 0, `${query}: ${r.output}`);
    return r.stdout.trim();
  }

  /** The replica streams from the primary. */
  async waitStreaming(): Promise<void> {
    await waitFor("the replica streaming", async () =>
      (await this.sql(this.primary, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")) === "1", 30_000);
  }

  /** The rows written with ids starting with `prefix`: id -> how many rows carry it. */
  async rows(prefix: string): Promise<Map<string, number>> {
    const out = await this.sql(this.primary, `SELECT id, count(*) FROM hits WHERE id LIKE '${prefix.replace(/'/g, "")}-%' GROUP BY id`);
    return new Map(out.split("\n").filter(Boolean).map((l) => {
      const [id, n] = l.split("\t");
      return [id, Number(n)] as [string, number];
    }));
  }

  /** When the primary's postmaster started (a restart changes it). */
  async primaryStartedAt(): Promise<string> {
    return this.sql(this.primary, "SELECT pg_postmaster_start_time()");
  }

  async isInRecovery(c: StartedTestContainer): Promise<boolean> {
    return (await this.sql(c, "SELECT pg_is_in_recovery()")) === "t";
  }

  /** The application's process id (a restart changes it). */
  async appPid(): Promise<number> {
    const r = await fetch(`${this.appUrl}/healthz`);
    return ((await r.json()) as { pid: number }).pid;
  }

  /** Waits until the application answers again and, if `not` is given, is a new process. */
  async appUp(not?: number, timeoutMs = 60_000): Promise<number> {
    return waitFor("the application answering", async () => {
      const pid = await this.appPid();
      return pid !== not ? pid : undefined;
    }, timeoutMs);
  }

  /**
   * After a switchover (the replica was promoted): swaps the roles and rebuilds the old
   * primary, stopped or still up, as a streaming replica of the new one.
   */
  async afterSwitchover(): Promise<void> {
    const [oldPrimary, newPrimary] = [this.primary, this.replica];
    assert.equal(await this.isInRecovery(newPrimary), false, "the replica was promoted");
    await oldPrimary.exec(["su", "postgres", "-c", "pg_ctl stop -m fast -w 2>/dev/null || true"]);
    const copy = await oldPrimary.exec(["pg-init-replica", newPrimary.getName().replace(/^\//, "")]);
    assert.equal(copy.exitCode, 0, copy.output);
    const start = await oldPrimary.exec(["su", "postgres", "-c", "pg_ctl start -w -t 60 -l /var/lib/postgresql/postgres.log"]);
    assert.equal(start.exitCode, 0, start.output);
    [this.primary, this.replica] = [newPrimary, oldPrimary];
    await this.waitStreaming();
  }

  /** Every container of the stack is stopped, by id, and the network removed. */
  async stop(): Promise<void> {
    await Promise.all([this.front?.container, this.plain?.container, this.nohold?.container, this.app, this.endpoint, ...this.pg]
      .filter((c): c is StartedTestContainer => c !== undefined)
      .map((c) => c.stop({ timeout: 2 }).catch(() => undefined)));
    await this.network.stop().catch(() => undefined);
  }
}
