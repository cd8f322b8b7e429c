// A binary upgrade mid-pause (USR2 to the master, then QUIT to the old one: what Debian's
// `invoke-rc.d nginx upgrade` does) keeps the pause: the new master, with new shared
// dicts, restores it from the state file, so new requests are held, not forwarded into
// the maintenance; and a resume through the new master reaches the old workers (they read
// the file), which release what they held. README "Reload and binary upgrade".
// nginx runs daemonised here (the upgrade needs a master that is not the container's
// PID 1), with the default state_file (Debian: /var/lib/nginx/body/intermission.state).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { GenericContainer, Wait, StartedNetwork, StartedTestContainer } from "testcontainers";
import { NginxNode, ensureImages, IMAGE, startRedis, newNetwork, DOCKER_DNS } from "./harness/node.ts";
import { nginxConfig, ConfigOptions } from "./harness/nginx-config.ts";
import { PendingRequest, waitFor } from "./harness/http.ts";
import { holdInOrder, sleep } from "./harness/held.ts";

const CONF = "/etc/intermission/nginx.conf";

async function startDaemon(opts: ConfigOptions, network?: StartedNetwork): Promise<NginxNode> {
  ensureImages();
  let builder = new GenericContainer(IMAGE)
    .withCopyContentToContainer([{ content: nginxConfig({ workers: 2, ...opts }), target: CONF }])
    // execve() needs the binary's path for the upgrade: nginx re-executes its argv[0].
    .withCommand(["sh", "-c", `/usr/sbin/nginx -c ${CONF} && exec sleep infinity`])
    .withExposedPorts(8080, 8081)
    .withWaitStrategy(Wait.forHttp("/_backend/arrivals", 8081).forStatusCode(200))
    .withStartupTimeout(30_000);
  if (network) builder = builder.withNetwork(network);
  const container = await builder.start();
  const host = container.getHost();
  return new NginxNode(container, `http://${host}:${container.getMappedPort(8080)}`, `http://${host}:${container.getMappedPort(8081)}`);
}

async function sh(node: NginxNode, cmd: string): Promise<string> {
  return (await node.exec(["sh", "-c", cmd])).trim();
}

/** USR2, the new master's workers up, then QUIT to the old master. Returns the old master's pid. */
async function upgrade(node: NginxNode): Promise<number> {
  const old = Number(await sh(node, "cat /run/nginx.pid"));
  const started = (await node.errorLog()).match(/start worker process/g)?.length ?? 0;
  await sh(node, `kill -USR2 ${old}`);
  await waitFor("the new master and its 2 workers", async () => {
    const pids = await sh(node, "cat /run/nginx.pid.oldbin /run/nginx.pid 2>/dev/null || true");
    const count = (await node.errorLog()).match(/start worker process/g)?.length ?? 0;
    return pids.split(/\s+/).length === 2 && count >= started + 2;
  });
  const quitting = (await node.errorLog()).match(/gracefully shutting down/g)?.length ?? 0;
  await sh(node, `kill -QUIT ${old}`);
  // Each old worker says so as it closes its listening sockets: new connections then go
  // to the new master's workers only.
  await waitFor("the old workers shutting down", async () => ((await node.errorLog()).match(/gracefully shutting down/g)?.length ?? 0) >= quitting + 2);
  return old;
}

/**
 * Paused, 3 requests held by the old master; the upgrade; then a new request must be held
 * by the new master and the resume must release all four within a few seconds.
 * `restored`: the log line that says how the new master knew (state file or fleet sync).
 */
async function pauseUpgradeResume(node: NginxNode, restored?: RegExp, resumeAfterMs = 0): Promise<void> {
    await node.resetBackend();
    const paused = await node.control("pause", "reason=db-swap");
    assert.equal(paused.status, 200, paused.body);
    const old: PendingRequest[] = await holdInOrder(node, ["/?id=o1", "/?id=o2", "/?id=o3"]);

    const oldMaster = await upgrade(node);
    // The old master is gone from the pid file's point of view; its workers still hold.
    await waitFor("the old master no longer listening", async () => (await node.status()).held === 0, 10_000);
    let s: any;
    await waitFor("the new master paused", async () => (s = await node.status()).state === "paused", 5000).catch(() => {
      assert.fail(`after the upgrade: ${JSON.stringify(s)}`);
    });
    assert.equal(s.reason, "db-swap");

    // A new request is held by the new master, not forwarded.
    const fresh = node.send("/?id=n1");
    await node.held(1);
    assert.deepEqual((await node.arrivals()).ids, [], "nothing may reach the backend while paused");

    await sleep(resumeAfterMs);
    const t0 = performance.now();
    const resumed = await node.control("resume");
    assert.equal(resumed.status, 200, resumed.body);
    for (const [i, p] of [...old, fresh].entries()) {
      const r = await p.reply;
      assert.equal(r.status, 200, `request ${i}: ${r.status} ${r.body}`);
    }
    const ms = performance.now() - t0;
    assert.ok(ms < 3000, `the old workers' held requests were released ${Math.round(ms)} ms after the resume`);
    console.log(`[figure] the old workers' held requests released ${Math.round(ms)} ms after the resume`);
    assert.deepEqual([...(await node.arrivals()).ids].sort(), ["n1", "o1", "o2", "o3"]);
    if (restored) assert.match(await node.errorLog(), restored);
    // The old master and its workers are gone once their requests are done.
    // (Its parent here is `sleep`, which never reaps: gone or a zombie.)
    await waitFor("the old master exited", async () => /^(Z|)$/.test(await sh(node, `awk '{print $3}' /proc/${oldMaster}/stat 2>/dev/null || true`)), 10_000);
}

describe("binary upgrade mid-pause (USR2 + QUIT, 2 workers)", () => {
  let node: NginxNode;
  before(async () => {
    node = await startDaemon({ setup: { max_hold: 30, pause_ttl: 0 } });
  });
  after(async () => node?.container.stop({ timeout: 2 }));

  it("the new master restores the pause from the state file, holds new requests, and its resume releases what the old workers held", async () => {
    await pauseUpgradeResume(node, /audit action=restore scope=default mode=paused/);
    await node.assertCleanLog();
  });
});

describe("binary upgrade mid-pause in fleet mode (store = redis)", () => {
  let network: StartedNetwork;
  let redis: StartedTestContainer;
  let node: NginxNode;
  before(async () => {
    network = await newNetwork();
    redis = await startRedis(network);
    node = await startDaemon({
      setup: { store: "redis", redis: { host: "redis", port: 6379, prefix: "up", connect_timeout: 0.2 }, max_hold: 30, pause_ttl: 0 },
      resolver: DOCKER_DNS,
    }, network);
  });
  after(async () => {
    await node?.container.stop({ timeout: 2 });
    await redis?.stop();
    await network?.stop();
  });

  it("the new master takes the pause from Redis, and the fleet's resume reaches the old workers through the state file", async () => {
    // The old workers' fleet sync ends within a second of their QUIT (its read wakes once
    // a second to look at ngx.worker.exiting()): the resume comes after that, as an
    // operator's would, so only the state file can tell them.
    await pauseUpgradeResume(node, /audit action=resume scope=default reason=state-file/, 2500);
    await node.assertCleanLog();
  });
});
