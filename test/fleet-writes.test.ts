// Fleet mode: a change's answer tells the truth when Redis is slow rather than down. A
// script sent to a Redis that stalls longer than read_timeout still runs when Redis wakes,
// so "no answer in time" is not "not written": the node settles the change's fate (applied,
// or fenced so it never runs) and answers accordingly, or answers "unknown"; `intermission
// run` then resumes, and never leaves the fleet paused behind a command it did not run.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { GenericContainer, Wait } from "testcontainers";
import type { StartedNetwork, StartedTestContainer } from "testcontainers";
import { NginxNode, newNetwork, ensureImages, DOCKER_DNS, ROOT } from "./harness/node.ts";
import { waitFor } from "./harness/http.ts";

/** read_timeout 1 s (the default), written out: the stalls below are measured against it. */
const READ_TIMEOUT_S = 1;
const FLEET_SETUP = {
  store: "redis", redis: { host: "redis", port: 6379, prefix: "writes", connect_timeout: 0.2, read_timeout: READ_TIMEOUT_S },
  max_hold: 30,
};
/** remote.ts's SETTLE_WITHIN: how long a node keeps asking Redis what became of a change. */
const SETTLE_WITHIN_S = 5;
/**
 * A stall is expected to log exactly these: the sync loop losing its subscription (and
 * retrying), and the control request's own line for a change that was not applied or
 * whose outcome is unknown.
 */
const STALL_LINES = [
  /\[error\].* intermission: fleet: redis[^;]*timeout\)?; keeping the last known state and retrying/,
  /\[error\].* intermission: (pause|maintenance|resume) of scope default not applied: redis: timeout; fenced afterwards, so it never runs/,
  /\[error\].* intermission: (pause|maintenance|resume) of scope default outcome unknown \(change [0-9a-f.]+\): redis: timeout; then no answer from Redis within 5s/,
];
/** A node that missed a change finds it at its next check: 5 s x 1.2 while running, and some slack. */
const CHECK_MS = 6000 + 1500;
const CLI = path.join(ROOT, "bin/intermission.js");

/** Redis with DEBUG allowed (Redis 7 refuses it by default): DEBUG SLEEP is the slow Redis. */
function startRedis(network: StartedNetwork): Promise<StartedTestContainer> {
  ensureImages();
  return new GenericContainer("intermission-redis:latest")
    .withNetwork(network)
    .withNetworkAliases("redis")
    .withExposedPorts(6379)
    .withCommand(["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no",
      "--enable-debug-command", "yes"])
    .withWaitStrategy(Wait.forLogMessage(/Ready to accept connections/))
    .start();
}

/** A connection to Redis from the test, through its mapped port; replies are read as lines. */
class RedisLine {
  private buf = "";
  private waiters: ((line: string) => void)[] = [];
  private constructor(private readonly sock: net.Socket) {
    sock.on("data", (d) => {
      this.buf += d.toString();
      let i: number;
      while ((i = this.buf.indexOf("\r\n")) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 2);
        this.waiters.shift()?.(line);
      }
    });
    sock.on("error", () => {});
  }

  /**
   * To the container's address on its network, not through the mapped port: Docker's
   * userland proxy can delay a PING by hundreds of milliseconds on a loaded machine, which
   * would read as a stall that is not there.
   */
  static async open(redis: StartedTestContainer, network: StartedNetwork): Promise<RedisLine> {
    const sock = net.connect({ port: 6379, host: redis.getIpAddress(network.getName()), family: 4 });
    await new Promise((resolve, reject) => sock.once("connect", resolve).once("error", reject));
    const c = new RedisLine(sock);
    assert.equal(await c.send("PING"), "+PONG"); // through the port mapping, end to end
    return c;
  }

  /** Sends one inline command; resolves with its reply line. */
  send(line: string): Promise<string> {
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      this.sock.write(`${line}\r\n`);
    });
  }

  close(): void {
    this.sock.destroy();
  }
}

/**
 * Stalls Redis for `seconds` (DEBUG SLEEP) and returns once it is asleep: a PING on a
 * connection already open (so no connect time is measured) is not answered within 300 ms.
 * `woke` resolves when Redis answers again (in an object: an async function's promise
 * would wait for it).
 */
async function stall(redis: StartedTestContainer, network: StartedNetwork, seconds: number): Promise<{ woke: Promise<void> }> {
  const [sleeper, pinger] = await Promise.all([RedisLine.open(redis, network), RedisLine.open(redis, network)]);
  const woke = sleeper.send(`DEBUG SLEEP ${seconds}`).then((reply) => {
    assert.equal(reply, "+OK");
    sleeper.close();
    pinger.close();
  });
  for (let i = 0; i < 50; i++) {
    const pong = await Promise.race([pinger.send("PING"), new Promise((r) => setTimeout(r, 300))]);
    if (pong === undefined) return { woke };
  }
  throw new Error("Redis never stalled");
}

/** CLIENT PAUSE ... WRITE: Redis answers reads and holds every write for `seconds`. */
async function holdWrites(redis: StartedTestContainer, network: StartedNetwork, seconds: number): Promise<{ woke: Promise<void> }> {
  const c = await RedisLine.open(redis, network);
  assert.equal(await c.send(`CLIENT PAUSE ${seconds * 1000} WRITE`), "+OK");
  c.close();
  return { woke: new Promise((resolve) => setTimeout(resolve, seconds * 1000)) };
}

function startNode(network: StartedNetwork): Promise<NginxNode> {
  return NginxNode.start({ setup: FLEET_SETUP, network, resolver: DOCKER_DNS });
}

function cli(args: string[]): { exit: Promise<number>; stderr: () => string; stdout: () => string } {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (c) => (out += c));
  child.stderr.on("data", (c) => (err += c));
  return { exit: new Promise((r) => child.on("exit", (code) => r(code ?? 1))), stderr: () => err, stdout: () => out };
}

describe("fleet changes while Redis is slow: stalled or holding writes longer than read_timeout", () => {
  let network: StartedNetwork;
  let redis: StartedTestContainer;
  let nodes: NginxNode[] = [];

  before(async () => {
    network = await newNetwork();
    redis = await startRedis(network);
    nodes = await Promise.all([startNode(network), startNode(network), startNode(network)]);
    // Redis learns the change script here. A change sent as EVALSHA to a Redis that does
    // not know it yet would, run late, only get NOSCRIPT and change nothing: the stalls
    // below must meet a script that really runs when Redis wakes.
    assert.equal((await nodes[0].control("resume")).status, 200);
  });
  after(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    await redis?.stop();
    await network?.stop();
  });
  afterEach(async () => {
    for (const n of nodes) await n.assertCleanLog(STALL_LINES);
  });

  /** Every node running, and still so after a full check period (a late change would show by then). */
  async function runningForGood(why: string): Promise<void> {
    for (const n of nodes) await waitFor(`${why}: running`, async () => (await n.status()).state === "running", CHECK_MS);
    const until = Date.now() + CHECK_MS;
    let i = 0;
    while (Date.now() < until) {
      for (const n of nodes) {
        const s = await n.status();
        assert.equal(s.state, "running", `${why}: ${n.base} is ${s.state} after its answers said it would run`);
      }
      const r = await nodes[i++ % nodes.length].get(`/?id=${why}-${i}`);
      assert.equal(r.status, 200);
      assert.ok(r.ms < 1000, `${why}: a request was held for ${r.ms} ms`);
    }
  }

  const cases = [
    { action: "pause", how: "stalled (DEBUG SLEEP 3)" },
    { action: "maintenance", how: "stalled (DEBUG SLEEP 3)" },
    // Redis reads the change but holds it; the node closes that connection at its read
    // timeout, and Redis drops what a closed client left: the settle finds it not run.
    { action: "pause", how: "holding writes (CLIENT PAUSE 3000 WRITE)" },
  ] as const;
  for (const { action, how } of cases) {
    it(`a ${action} sent to a Redis ${how} is answered as it ends up: applied and held, or never applied`, async (t) => {
      const { woke } = how.startsWith("stalled") ? await stall(redis, network, 3) : await holdWrites(redis, network, 3);
      const t0 = Date.now();
      const r = await nodes[0].control(action, `reason=slow-${action}`);
      const ms = Date.now() - t0;
      await woke;
      assert.ok(ms >= READ_TIMEOUT_S * 1000, `the change met the stall (answered after ${ms} ms: ${r.status} ${r.body})`);
      // Redis answered again within the settle bound: the outcome is known, not "unknown".
      assert.ok(r.status === 200 || r.status === 503, r.body);
      const body = r.json();
      t.diagnostic(`answered ${r.status} after ${ms} ms: ${body.error ?? "applied"}`);
      assert.notEqual(body.applied, "unknown", r.body);
      if (r.status === 200) {
        assert.equal(body.applied, true, r.body);
        for (const n of nodes) await waitFor("applied everywhere", async () => (await n.status()).state === (action === "pause" ? "paused" : "maintenance"), CHECK_MS);
        if (action === "pause") {
          const held = nodes[1].send("/?id=held-after-stall");
          await nodes[1].held(1);
          assert.equal((await nodes[2].control("resume")).status, 200);
          assert.equal((await held.reply).status, 200);
        } else {
          assert.equal((await nodes[1].get("/?id=maint")).status, 503);
          assert.equal((await nodes[2].control("resume")).status, 200);
        }
        for (const n of nodes) await waitFor("resumed", async () => (await n.status()).state === "running", CHECK_MS);
      } else {
        assert.equal(body.applied, false, r.body);
        assert.match(body.error, /not applied/);
        await runningForGood(`slow-${action}`);
      }
    });
  }

  it("run against a stalled Redis runs the command under a real pause, or leaves the fleet running", async (t) => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "im-writes-"));
    const marker = path.join(dir, "state");
    const urls = nodes.flatMap((n) => ["--url", n.url("/_intermission")]);
    const statusUrl = nodes[1].url("/_intermission/status");
    // The command records the state node B is in while it runs.
    const probe = `fetch(${JSON.stringify(statusUrl)}).then(r => r.json()).then(s => require("fs").writeFileSync(${JSON.stringify(marker)}, s.state))`;
    const { woke } = await stall(redis, network, 3);
    const run = cli([...urls, "run", "--no-drain", "--ttl", "120", "--", process.execPath, "-e", probe]);
    const code = await run.exit;
    await woke;
    t.diagnostic(`run exited ${code}`);
    if (code === 0) {
      assert.equal(readFileSync(marker, "utf8"), "paused", "the command ran under a real pause");
      assert.match(run.stderr(), /resumed .*released/);
    } else {
      assert.equal(existsSync(marker), false, `${run.stderr()}\nthe command did not run`);
    }
    await runningForGood("run");
  });

  it("a pause that Redis does not answer within the settle bound is \"unknown\"; run resumes and runs nothing", async () => {
    const marker = path.join(mkdtempSync(path.join(os.tmpdir(), "im-writes-")), "ran");
    const urls = nodes.flatMap((n) => ["--url", n.url("/_intermission")]);
    // Longer than read_timeout + SETTLE_WITHIN: no node can learn the pause's fate in time.
    const { woke } = await stall(redis, network, READ_TIMEOUT_S + SETTLE_WITHIN_S + 2);
    const run = cli([...urls, "run", "--no-drain", "--ttl", "120", "--", "touch", marker]);
    const code = await run.exit;
    await woke;
    assert.notEqual(code, 0, run.stderr());
    assert.equal(existsSync(marker), false, "the command must not run");
    // The late pauses ran when Redis woke, or were fenced by the resumes: either way the
    // resume through each node came last.
    await runningForGood("unknown-run");
    assert.match(run.stderr(), /FAILED to pause .*503 pause outcome unknown/);
    assert.match(run.stderr(), /resuming the 3 node\(s\) that did pause or may have \(3 of unknown outcome\)/);
    assert.match(run.stderr(), /resumed http/);
  });

  it("run whose --timeout ends before a node's answer counts that pause as unknown and resumes it", async () => {
    const marker = path.join(mkdtempSync(path.join(os.tmpdir(), "im-writes-")), "ran");
    const urls = nodes.flatMap((n) => ["--url", n.url("/_intermission")]);
    // The nodes answer once Redis wakes (about 3 s, "applied"); the CLI stops waiting at 1 s.
    const { woke } = await stall(redis, network, 3);
    const run = cli([...urls, "--timeout", "1", "run", "--no-drain", "--ttl", "120", "--", "touch", marker]);
    const code = await run.exit;
    await woke;
    assert.notEqual(code, 0, run.stderr());
    assert.equal(existsSync(marker), false, "the command must not run");
    await runningForGood("cli-timeout");
    assert.match(run.stderr(), /FAILED to pause .*no answer within 1s/);
    assert.match(run.stderr(), /resuming the 3 node\(s\) that did pause or may have \(3 of unknown outcome\)/);
  });

  it("an unknown maintenance: the CLI says so and what to do; the node settles it once Redis answers, and logs which", async (t) => {
    const urls = ["--url", nodes[0].url("/_intermission")];
    const { woke } = await stall(redis, network, READ_TIMEOUT_S + SETTLE_WITHIN_S + 2);
    const m = cli([...urls, "maintenance", "--reason", "unknown-maint"]);
    assert.equal(await m.exit, 1, m.stderr());
    await woke;
    assert.match(m.stdout(), /UNKNOWN/);
    assert.match(m.stderr(), /maintenance on 1 node\(s\) may or may not take effect \(maintenance with no ttl lasts until resumed\): run `intermission resume`/);
    // No later change through the node: its sync loop settles the change and says what it became.
    const fate = await waitFor("the node to settle the unknown maintenance", async () =>
      (await nodes[0].errorLog()).match(/the maintenance of scope default answered "unknown" \(change \S+\) was (applied|not applied)/)?.[1],
    CHECK_MS);
    t.diagnostic(`settled by the sync loop: ${fate}`);
    if (fate === "applied") {
      for (const n of nodes) await waitFor("the maintenance everywhere", async () => (await n.status()).state === "maintenance", CHECK_MS);
    } else {
      await runningForGood("unknown-maint-fenced");
    }
    const r = cli([...urls, "resume"]);
    assert.equal(await r.exit, 0, r.stderr());
    await runningForGood("unknown-maint");
  });
});
