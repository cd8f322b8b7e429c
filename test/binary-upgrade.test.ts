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

/** The default state file (Debian's client body temp path), as the old and new masters use it. */
const STATE = "/var/lib/nginx/body/intermission.state";

/** Tracks whether a held request has been answered yet. */
function watched(p: PendingRequest): { settled: () => boolean; reply: PendingRequest["reply"] } {
  let done = false;
  p.reply.then(() => (done = true), () => (done = true));
  return { settled: () => done, reply: p.reply };
}

/** nginx stopped and started again in the same container (new shared dicts: the file is all that is left). */
async function restart(node: NginxNode): Promise<void> {
  await sh(node, `nginx -c ${CONF} -s stop; while [ -e /run/nginx.pid ]; do sleep 0.05; done; /usr/sbin/nginx -c ${CONF}`);
  await waitFor("nginx answering again", async () => (await fetch(node.url("/_intermission/status")).catch(() => undefined))?.status === 200);
}

describe("binary upgrade: a refresh and a maintenance through the new master reach the old workers", () => {
  let node: NginxNode;
  before(async () => {
    node = await startDaemon({ setup: { max_hold: 60, pause_ttl: 0 } });
  });
  after(async () => node?.container.stop({ timeout: 2 }));

  it("the old workers keep holding past their original until, then answer 503 for the maintenance; nothing reaches the backend", async () => {
    await node.resetBackend();
    const paused = await node.control("pause", "ttl=6&reason=first");
    assert.equal(paused.status, 200, paused.body);
    const until = paused.json().until as number;
    const old = (await holdInOrder(node, ["/?id=o1", "/?id=o2", "/?id=o3"])).map(watched);
    const oldMaster = await upgrade(node);
    await waitFor("the new master paused", async () => (await node.status()).state === "paused", 5000);

    const refreshed = await node.control("pause", "ttl=60&reason=longer");
    assert.equal(refreshed.status, 200, refreshed.body);
    assert.equal(refreshed.json().already, true);
    // Past the until the old workers were given: they must go on holding.
    await sleep(Math.max(0, (until + 2) * 1000 - Date.now()));
    assert.deepEqual(old.map((o) => o.settled()), [false, false, false], "the old workers' held requests were answered at their stale until");
    assert.deepEqual((await node.arrivals()).ids, [], "nothing may reach the backend while the pause goes on");

    const maint = await node.control("maintenance", "reason=swap");
    assert.equal(maint.status, 200, maint.body);
    const t0 = performance.now();
    for (const [i, o] of old.entries()) {
      const r = await o.reply;
      assert.equal(r.status, 503, `request o${i + 1}: ${r.status} ${r.body}`);
    }
    console.log(`[figure] the old workers answered 503 ${Math.round(performance.now() - t0)} ms after the maintenance`);
    assert.deepEqual((await node.arrivals()).ids, []);
    const log = await node.errorLog();
    assert.match(log, /audit action=adopt scope=default reason=state-file was=paused mode=paused/);
    assert.match(log, /audit action=adopt scope=default reason=state-file was=paused mode=maintenance/);
    assert.doesNotMatch(log, /auto-resume/);
    assert.equal((await node.control("resume")).status, 200);
    await waitFor("the old master exited", async () => /^(Z|)$/.test(await sh(node, `awk '{print $3}' /proc/${oldMaster}/stat 2>/dev/null || true`)), 10_000);
    await node.assertCleanLog();
  });
});

describe("the state file when it cannot be written, and when it is corrupt", () => {
  let node: NginxNode;
  before(async () => {
    node = await startDaemon({ setup: { max_hold: 5, pause_ttl: 0 } });
  });
  after(async () => node?.container.stop({ timeout: 2 }));

  it("a resume while the directory is read-only still empties the file: a restart does not bring the pause back", async () => {
    assert.equal((await node.control("pause", "ttl=120&reason=swap")).status, 200);
    await sh(node, `chmod 555 /var/lib/nginx/body`);
    try {
      const resumed = await node.control("resume");
      assert.equal(resumed.status, 200, resumed.body);
      assert.equal(resumed.json().state_file_error, undefined, resumed.body);
      assert.doesNotMatch(await sh(node, `cat ${STATE}`), /"scopes"/);
      await restart(node);
      assert.equal((await node.status()).state, "running");
      assert.equal((await node.get("/?id=after")).status, 200);
    } finally {
      await sh(node, `chmod 755 /var/lib/nginx/body`);
    }
    await node.assertCleanLog();
  });

  it("a file that can be neither rewritten nor removed: the answer and the log say a restart would restore it", async () => {
    assert.equal((await node.control("pause", "ttl=120&reason=swap")).status, 200);
    await sh(node, `chmod 444 ${STATE}; chmod 555 /var/lib/nginx/body`);
    try {
      const resumed = await node.control("resume");
      assert.equal(resumed.status, 200, resumed.body);
      assert.match(resumed.json().state_file_error ?? "", /nor remove it.*would restore/, resumed.body);
    } finally {
      await sh(node, `chmod 755 /var/lib/nginx/body; chmod 644 ${STATE}; rm -f ${STATE}`);
    }
    await node.assertCleanLog([/cannot write the pause state to .*nor remove it: .*would restore the pauses it still lists/]);
  });

  it("a corrupt file: nginx starts, only what the control API could have made is restored, status answers JSON", async () => {
    const fut = Math.floor(Date.now() / 1000) + 300;
    const entry = (scope: string, extra: string) => `{"scope":"${scope}","mode":"paused","since":${fut - 400},"until":${fut},"reason":"r"${extra}}`;
    const file = `{"written":${fut - 300},"scopes":[` + [
      `{"scope":"default","mode":"paused","since":${fut - 400},"until":1e999,"reason":"inf"}`,
      entry("../../etc x", ""),
      `{"scope":"long","mode":"paused","since":${fut - 400},"until":${fut},"reason":"'"$R"'"}`,
      `{"scope":"far","mode":"paused","since":${fut - 400},"until":${fut + 8 * 86400},"reason":"far"}`,
      `{"scope":"ahead","mode":"paused","since":${fut + 100},"until":${fut},"reason":"ahead"}`,
      entry("ok", ""),
    ].join(",") + "]}";
    await sh(node, `R=$(head -c 100000 /dev/zero | tr '\\0' a); printf '%s' '${file}' > ${STATE}`);
    assert.ok(Number(await sh(node, `wc -c < ${STATE}`)) > 100_000);
    await restart(node);
    const d = await node.get("/_intermission/status");
    assert.equal(d.status, 200, d.body);
    assert.equal(d.json().state, "running", d.body);
    for (const scope of ["long", "far", "ahead"]) assert.equal((await node.status(scope)).state, "running", scope);
    const ok = await node.status("ok");
    assert.equal(ok.state, "paused");
    assert.equal(ok.until, fut);
    assert.equal((await node.get("/?id=x")).status, 200);
    const log = await node.errorLog();
    assert.doesNotMatch(log, /action=restore scope=(default|\.\.|long|far|ahead)/);
    assert.equal(log.match(/skipped the paused of a scope/g)?.length, 5, log);
    assert.equal((await node.control("resume", "scope=ok")).status, 200);
    await node.assertCleanLog();
  });
});

// Found by the bench (its nodes set client_body_temp_path): nginx creates its compiled-in
// client body temp directory only if some location uses it, and the default state file
// lives there. Without it, every pause and resume logged an [error] and answered with a
// state_file_error; now there is no state file, said once.
describe("the default state file when client_body_temp_path is moved and nginx's own directory does not exist", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ httpDirectives: "client_body_temp_path /tmp/nginx-body;" });
  });
  after(async () => node?.stop());

  it("pauses and resumes answer without state_file_error and log no [error]; one [warn] per process says there is no state file", async () => {
    for (let i = 0; i < 3; i++) {
      for (const action of ["pause", "resume"]) {
        const r = await node.control(action);
        assert.equal(r.status, 200, r.body);
        assert.equal(r.json().state_file_error, undefined, r.body);
      }
    }
    const warnings = (await node.errorLog()).match(/\[warn\].*intermission: no state file: \/var\/lib\/nginx\/body/g) ?? [];
    assert.ok(warnings.length >= 1 && warnings.length <= 3, `${warnings.length} warnings (the master and each of 2 workers at most once)`);
    await node.assertCleanLog();
  });
});
