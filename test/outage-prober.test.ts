// The outage's prober (README "Unplanned outages", src/intermission/outage.ts) outlives
// the worker that started it: held requests are released when the application comes back
// even if that worker was killed (kill -9) or exits in a reload or a binary upgrade, with
// no new request to start another one; an exiting worker stops probing once nothing is held; and it probes every address of the failed try (an upstream group's
// servers), not the last only. Real nginx, 2 workers, applications as nginx processes of
// their own in the container (they stop and start as the tests say).
import { describe, it, after, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { GenericContainer, Wait } from "testcontainers";
import { NginxNode, ensureImages, IMAGE } from "./harness/node.ts";
import { nginxConfig, RETRY_ON_ERROR, retryLocation, serverHooks } from "./harness/nginx-config.ts";
import { get, send, waitFor, PendingRequest, Reply } from "./harness/http.ts";
import { TestApp, APPLIED_LOG_FORMAT } from "./harness/app.ts";

/** An application on 127.0.0.1:PORT that answers "app PORT" and records each ?id= it got; stopped gracefully. */
const appAt = (port: number) => new TestApp({
  name: `app-${port}`,
  listen: `127.0.0.1:${port}`,
  http: APPLIED_LOG_FORMAT,
  stopSignal: "quit",
  server: `
        location / {
            access_log /tmp/app-${port}-applied.log ids;
            return 200 "app ${port}\\n";
        }`,
});

const SINGLE = 8082;
/** The two servers of the upstream group `pair`. */
const FIRST = 8083;
const SECOND = 8084;

// `pair` remembers no failure (max_fails=0): a worker whose request found both servers
// closed would otherwise skip both for fail_timeout (nginx's "no live upstreams"), which is
// nginx's own peer bookkeeping, not what is measured here. `half` keeps nginx's defaults.
const HTTP = `
    upstream pair { server 127.0.0.1:${FIRST} max_fails=0; server 127.0.0.1:${SECOND} max_fails=0; }
    upstream half { server 127.0.0.1:${FIRST}; server 127.0.0.1:${SECOND}; }`;

const proxied = (prefix: string, scope: string, target: string) => `
        location ${prefix} {
            set $intermission_scope ${scope};
            access_by_lua_block { require("intermission").access() }
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass ${target};${RETRY_ON_ERROR}
        }`;

const LOCATIONS = `
${proxied("/app/", "app", `http://127.0.0.1:${SINGLE}`)}
${proxied("/pair/", "pair", "http://pair")}
${proxied("/half/", "half", "http://half")}${retryLocation()}`;

/** nginx's own lines for a request's failed connect (the prober's are counted, not logged). */
const REQUEST_CONNECT = /\[error\].*connect\(\) failed \(111: Connection refused\) while connecting to upstream/;
/** The master reaps the worker this file kills. */
const CRASH_LINE = /\[alert\] \d+#\d+: worker process \d+ exited on signal 9/;

/** Longer than the prober claim's lease (5 s): a test passes only if the prober is back well before either. */
const OUTAGE_HOLD = 12;

/** held + retried = released + timed_out + aborted + maintenance + held now (counters.ts). */
function assertBalanced(s: any): void {
  const c = s.counters;
  assert.equal(c.held + c.retried, c.released + c.timed_out + c.aborted + c.maintenance + s.held, JSON.stringify(c));
}

interface Held { id: string; pending: PendingRequest; pid: number }

/** The pid of every `hold` line of the scope so far, in order. */
async function holdPids(node: NginxNode, scope: string): Promise<number[]> {
  const out: number[] = [];
  for (const line of (await node.errorLog()).split("\n")) {
    const m = new RegExp(`\\[notice\\] (\\d+)#\\d+: .*intermission: hold .*scope=${scope} ticket=`).exec(line);
    if (m) out.push(Number(m[1]));
  }
  return out;
}

/** Sends one request of the scope and waits until it is held; returns the worker holding it. */
async function holdOne(node: NginxNode, scope: string, path: string, id: string): Promise<Held> {
  const before = (await holdPids(node, scope)).length;
  const held = (await node.status(scope)).held;
  const pending = send(node.url(`${path}?id=${id}`));
  pending.reply.catch(() => undefined); // a killed worker's client sees a reset
  await node.held(held + 1, scope);
  const pids = await waitFor("its hold line", async () => {
    const p = await holdPids(node, scope);
    return p.length > before ? p : undefined;
  });
  return { id, pending, pid: pids[pids.length - 1] };
}

/** The worker whose request started the scope's outage (its audit line); the prober starts there. */
async function outageWorker(node: NginxNode, scope: string): Promise<number> {
  return waitFor("the outage-start line", async () => {
    const m = new RegExp(`\\[notice\\] (\\d+)#\\d+: .*audit action=outage-start scope=${scope} `).exec(await node.errorLog());
    return m ? Number(m[1]) : undefined;
  });
}

/**
 * After a reload: the new workers are up, and an old one still holds (an old worker that
 * holds nothing may be gone already).
 */
async function reloaded(node: NginxNode): Promise<void> {
  await waitFor("the new workers up", async () => ((await node.errorLog()).match(/start worker process/g)?.length ?? 0) >= 4);
  await waitFor("an old worker shutting down", async () => (await node.shuttingDownWorkers()) >= 1);
}

async function startOutage(node: NginxNode, scope: string, path: string): Promise<Held> {
  const first = await holdOne(node, scope, path, "first");
  await waitFor("the outage", async () => (await node.status(scope)).state === "outage");
  return first;
}

/**
 * Starts the application and waits for the held requests' replies. `ms`: from the moment
 * the test saw the port listening to the reply (negative: answered before the test saw
 * it); `startMs`: how long the start took to be seen (docker exec, the machine's load).
 */
async function backAndReplies(node: NginxNode, app: TestApp, held: Held[]): Promise<{ replies: { id: string; reply: Reply; ms: number }[]; slowest: number; startMs: number }> {
  const t0 = performance.now();
  const pending = held.map(async (h) => ({ id: h.id, reply: await h.pending.reply, at: performance.now() }));
  await app.start(node);
  const t1 = performance.now();
  const replies = (await Promise.all(pending)).map((r) => ({ id: r.id, reply: r.reply, ms: Math.round(r.at - t1) }));
  return { replies, slowest: Math.max(...replies.map((r) => r.ms)), startMs: Math.round(t1 - t0) };
}

/** As unplanned-outage.test.ts: the site flows within a second of the application's return (the prober's interval is 0.5 s). */
const FLOWS_WITHIN = 1000;

const NODE = {
  workers: 2,
  setup: { max_hold: 30, outage_hold: OUTAGE_HOLD, retry_after: 7 },
  httpDirectives: HTTP,
  serverDirectives: serverHooks(),
  extraLocations: LOCATIONS,
};
const APP_FILES = [SINGLE, FIRST, SECOND].map((p) => appAt(p).file());

describe("the outage prober outlives its worker and probes every address (2 workers)", () => {
  let node: NginxNode;
  let single: TestApp;
  let first: TestApp;
  let second: TestApp;

  // A fresh nginx per test: a killed or reloaded worker must not be what the next test measures.
  beforeEach(async () => {
    node = await NginxNode.start({ ...NODE, files: APP_FILES });
    single = appAt(SINGLE);
    first = appAt(FIRST);
    second = appAt(SECOND);
    await Promise.all([single.start(node), first.start(node), second.start(node)]);
  });
  afterEach(async () => {
    try {
      await node.assertCleanLog([REQUEST_CONNECT, CRASH_LINE]);
    } finally {
      await node.stop();
    }
  });

  it("kill -9 of the prober's worker, held requests in the other one, no new request: released within a second of the application's return", async () => {
    await single.stop(node);
    const held: Held[] = [await startOutage(node, "app", "/app/k")];
    const victim = await outageWorker(node, "app");
    // Until the other worker holds 3 (the kernel spreads connections over the workers).
    for (let i = 1; i < 40 && held.filter((h) => h.pid !== victim).length < 3; i++) held.push(await holdOne(node, "app", "/app/k", `k${i}`));
    const survivors = held.filter((h) => h.pid !== victim);
    assert.ok(survivors.length >= 3, `the other worker holds only ${survivors.length} of ${held.length}`);

    await node.exec(["sh", "-c", `kill -9 ${victim}`]);
    await waitFor(`worker ${victim} reaped`, async () => new RegExp(`worker process ${victim} exited on signal 9`).test(await node.errorLog()));
    const { replies, slowest, startMs } = await backAndReplies(node, single, survivors);
    for (const r of replies) assert.equal(r.reply.status, 200, `${r.id}: ${r.reply.status} ${r.reply.body}`);
    console.log(`[figure] kill -9: ${survivors.length} held requests of the surviving worker answered 200 ${startMs + slowest} ms after starting the application (seen listening at ${startMs} ms) (outage_hold ${OUTAGE_HOLD} s)`);
    assert.ok(slowest < FLOWS_WITHIN, `released ${slowest} ms after the application was listening`);
    assert.match(await node.errorLog(), new RegExp(`outage prober of scope app taken over from worker ${victim} \\(gone\\)`));
    const applied = await single.applied(node);
    for (const h of survivors) assert.ok(applied.includes(h.id), `${h.id} applied`);
    const s = await waitFor("nothing held, running", async () => {
      const st = await node.status("app");
      return st.held === 0 && st.state === "running" ? st : undefined;
    }, 5000);
    assertBalanced(s);
  });

  it("reload (HUP) during an outage, no new request: the old workers' held requests are released when the application returns, and the old workers exit", async () => {
    await single.stop(node);
    const held: Held[] = [await startOutage(node, "app", "/app/r")];
    for (let i = 1; i <= 5; i++) held.push(await holdOne(node, "app", "/app/r", `r${i}`));
    await node.reload();
    await reloaded(node);
    const { replies, slowest, startMs } = await backAndReplies(node, single, held);
    for (const r of replies) assert.equal(r.reply.status, 200, `${r.id}: ${r.reply.status} ${r.reply.body}`);
    console.log(`[figure] reload: ${held.length} held requests of the old workers answered 200 ${startMs + slowest} ms after starting the application (seen listening at ${startMs} ms)`);
    assert.ok(slowest < FLOWS_WITHIN, `released ${slowest} ms after the application was listening`);
    await waitFor("the old workers gone", async () => (await node.shuttingDownWorkers()) === 0, 5000);
    const s = await node.status("app");
    assert.equal(s.state, "running");
    assertBalanced(s);
  });

  it("reload during an outage that does not end: the old workers answer their held requests at outage_hold and exit; a new request meets the outage in a new worker", async () => {
    await single.stop(node);
    const held: Held[] = [await startOutage(node, "app", "/app/d")];
    for (let i = 1; i <= 3; i++) held.push(await holdOne(node, "app", "/app/d", `d${i}`));
    const since = performance.now();
    await node.reload();
    await reloaded(node);
    for (const h of held) assert.equal((await h.pending.reply).status, 503, h.id);
    // Their prober stops with nothing held: graceful shutdown is not held up by the outage.
    await waitFor("the old workers gone", async () => (await node.shuttingDownWorkers()) === 0, 3000);
    const gone = Math.round(performance.now() - since);
    console.log(`[figure] reload, outage going on: old workers gone ${gone} ms after the reload (outage_hold ${OUTAGE_HOLD} s)`);
    // The outage goes on (fail fast now); a new worker takes the prober over and ends it.
    const probes = (await node.status("app")).counters.probe_failures;
    assert.equal((await get(node.url("/app/d?id=late"))).status, 503);
    await waitFor("a new worker probing", async () => (await node.status("app")).counters.probe_failures > probes);
    await single.start(node);
    await waitFor("running again", async () => (await node.status("app")).state === "running", 3000);
  });

  it("an upstream group with both servers closed: the prober probes both, and the first one's return ends the outage", async () => {
    await Promise.all([first.stop(node), second.stop(node)]);
    const held: Held[] = [await startOutage(node, "pair", "/pair/p")];
    const s = await node.status("pair");
    assert.equal(s.outage.upstream, `127.0.0.1:${FIRST}, 127.0.0.1:${SECOND}`, "status names the failed try's addresses");
    for (let i = 1; i <= 3; i++) held.push(await holdOne(node, "pair", "/pair/p", `p${i}`));
    const { replies, slowest, startMs } = await backAndReplies(node, first, held); // the first address, not the last
    for (const r of replies) assert.equal(r.reply.status, 200, `${r.id}: ${r.reply.status} ${r.reply.body}`);
    console.log(`[figure] group of two, the first server back: ${held.length} held requests answered 200 ${startMs + slowest} ms after starting it (seen listening at ${startMs} ms)`);
    assert.ok(slowest < FLOWS_WITHIN, `released ${slowest} ms after the first server was listening`);
    assert.match(await node.errorLog(), new RegExp(`audit action=outage-end scope=pair upstream=127\\.0\\.0\\.1:${FIRST}, 127\\.0\\.0\\.1:${SECOND} `));
    assertBalanced(await node.status("pair"));
  });

  it("an upstream group with one live server of two (nginx's defaults): not held, nginx's next upstream serves it, no outage", async () => {
    await second.stop(node);
    for (let i = 0; i < 6; i++) {
      const r = await get(node.url(`/half/h?id=h${i}`));
      assert.equal(r.status, 200, r.body);
      assert.equal(r.body, `app ${FIRST}\n`);
    }
    const s = await node.status("half");
    assert.equal(s.state, "running");
    assert.equal(s.held, 0);
    assert.equal(s.counters.outages, 0);
    assert.equal(s.counters.outage_held, 0);
    assert.equal(s.counters.retried, 0);
    // nginx did try the closed server (and went on to the live one).
    assert.match(await node.errorLog(), new RegExp(`connect\\(\\) failed .*upstream: "http://127\\.0\\.0\\.1:${SECOND}/half/h`));
  });
});

/** outage_hold of the next describe: short, so that its outages outlast it within the test. */
const SHORT_HOLD = 2;

/** Ten requests at once; their replies and when each came, from the send. */
async function burst(node: NginxNode, path: string, tag: string): Promise<{ statuses: number[]; slowest: number }> {
  const t0 = performance.now();
  const replies = await Promise.all(Array.from({ length: 10 }, (_, i) => get(node.url(`${path}?id=${tag}${i}`)).then((r) => ({ status: r.status, ms: performance.now() - t0 }))));
  return { statuses: replies.map((r) => r.status), slowest: Math.round(Math.max(...replies.map((r) => r.ms))) };
}

describe("a prober lost with its worker, the release or the outage waiting for it (2 workers)", () => {
  let node: NginxNode;
  let single: TestApp;

  beforeEach(async () => {
    node = await NginxNode.start({ ...NODE, setup: { ...NODE.setup, outage_hold: SHORT_HOLD }, files: APP_FILES });
    single = appAt(SINGLE);
    await single.start(node);
  });
  afterEach(async () => {
    try {
      await node.assertCleanLog([REQUEST_CONNECT, CRASH_LINE]);
    } finally {
      await node.stop();
    }
  });

  /** An outage that outlasted outage_hold (its held request answered 503), nothing held now. */
  async function outlastedOutage(path: string): Promise<number> {
    await single.stop(node);
    const first = await startOutage(node, "app", path);
    assert.equal((await first.pending.reply).status, 503, "held for outage_hold, then 503");
    return first.pid;
  }

  // The old workers' prober stops once they hold nothing; no new worker probes until a
  // request comes. Before the fix that request, and those with it, were answered 503 at
  // once (the outage was past outage_hold), though the application had long been back.
  it("the outage past outage_hold, a reload with nothing held, the application back: the next burst is served, none answered 503 at once", async () => {
    await outlastedOutage("/app/q");
    await node.reload();
    await waitFor("the new workers up", async () => ((await node.errorLog()).match(/start worker process/g)?.length ?? 0) >= 4);
    await waitFor("the old workers gone", async () => (await node.shuttingDownWorkers()) === 0, 5000);
    await single.start(node);
    // No status call before the burst: a status also starts the prober it lacks.
    const { statuses, slowest } = await burst(node, "/app/q", "b");
    console.log(`[figure] an outage's prober gone with a reload: a burst of 10 answered ${statuses.join(",")} within ${slowest} ms`);
    assert.deepEqual(statuses, Array(10).fill(200));
    const s = await node.status("app");
    assert.equal(s.state, "running");
    assertBalanced(s);
  });

  it("the outage past outage_hold, its prober's worker killed with nothing held, the application back: the next burst is served", async () => {
    await outlastedOutage("/app/v");
    const victim = await outageWorker(node, "app");
    await node.exec(["sh", "-c", `kill -9 ${victim}`]);
    await waitFor(`worker ${victim} reaped`, async () => new RegExp(`worker process ${victim} exited on signal 9`).test(await node.errorLog()));
    await single.start(node);
    const { statuses, slowest } = await burst(node, "/app/v", "v");
    console.log(`[figure] an outage's prober killed: a burst of 10 answered ${statuses.join(",")} within ${slowest} ms`);
    assert.deepEqual(statuses, Array(10).fill(200));
    assert.equal((await node.status("app")).state, "running");
  });

  it("the outage past outage_hold, its prober gone with a reload, the application back: a status alone ends it (it starts the prober it lacks)", async () => {
    await outlastedOutage("/app/s");
    await node.reload();
    await waitFor("the old workers gone", async () => (await node.shuttingDownWorkers()) === 0, 5000);
    await single.start(node);
    await waitFor("running, after status calls only", async () => (await node.status("app")).state === "running", 2000);
    assert.deepEqual(await single.applied(node), [], "no request was sent");
  });

  it("the outage going on, its prober gone with a reload: the next request waits a prober's first round (about a second), not outage_hold, then 503", async () => {
    await outlastedOutage("/app/g");
    await node.reload();
    await waitFor("the old workers gone", async () => (await node.shuttingDownWorkers()) === 0, 5000);
    const reply = await get(node.url("/app/g?id=late"));
    assert.equal(reply.status, 503);
    assert.ok(reply.ms < 1800, `answered after ${Math.round(reply.ms)} ms`);
    // Confirmed by the new prober: answered at once now.
    const next = await get(node.url("/app/g?id=later"));
    assert.equal(next.status, 503);
    assert.ok(next.ms < 300, `answered after ${Math.round(next.ms)} ms`);
    assert.equal((await node.status("app")).outage.fail_fast, true);
  });

  // A planned pause; the application stopped meanwhile: the first released request meets
  // the closed port and waits in the retry lane, and its worker probes the port (the
  // release waits for it). That worker is killed. Before the fix the other worker's held
  // requests waited until the failed request's deadline (max_hold, 30 s here).
  it("the retry lane's connect prober killed with its worker: the other worker takes it over, its held requests go within a second of the application's return", async () => {
    await node.control("pause", "scope=app");
    const held: Held[] = [];
    const count = (pid: number, want: boolean) => held.filter((h) => (h.pid === pid) === want).length;
    // Until each worker holds 3 (the kernel spreads connections over the workers).
    for (let i = 0; i < 60; i++) {
      held.push(await holdOne(node, "app", "/app/c", `c${i}`));
      const pids = [...new Set(held.map((h) => h.pid))];
      if (pids.length === 2 && pids.every((p) => count(p, true) >= 3)) break;
    }
    const pids = [...new Set(held.map((h) => h.pid))];
    assert.ok(pids.length === 2 && pids.every((p) => count(p, true) >= 3), `held by ${JSON.stringify(pids.map((p) => [p, count(p, true)]))}`);
    await single.stop(node);
    await node.control("resume", "scope=app");
    const victim = await waitFor("a request held again in the retry lane", async () => {
      const m = /\[notice\] (\d+)#\d+: .*intermission: hold .*scope=app ticket=\d+ lane=retry/.exec(await node.errorLog());
      return m ? Number(m[1]) : undefined;
    });
    assert.equal((await node.status("app")).waiting_ready, true, "the release waits for the port");
    await node.exec(["sh", "-c", `kill -9 ${victim}`]);
    await waitFor(`worker ${victim} reaped`, async () => new RegExp(`worker process ${victim} exited on signal 9`).test(await node.errorLog()));
    const survivors = held.filter((h) => h.pid !== victim);
    const { replies, slowest, startMs } = await backAndReplies(node, single, survivors);
    for (const r of replies) assert.equal(r.reply.status, 200, `${r.id}: ${r.reply.status} ${r.reply.body}`);
    console.log(`[figure] connect prober killed: ${survivors.length} held requests of the surviving worker answered 200 ${startMs + slowest} ms after starting the application (seen listening at ${startMs} ms)`);
    assert.ok(slowest < FLOWS_WITHIN, `released ${slowest} ms after the application was listening`);
    assert.match(await node.errorLog(), new RegExp(`connect prober of scope app taken over from worker ${victim} \\(gone\\)`));
  });
});

/** nginx daemonised (the upgrade needs a master that is not the container's PID 1), as in binary-upgrade.test.ts. */
async function startDaemon(): Promise<NginxNode> {
  ensureImages();
  const conf = "/etc/intermission/nginx.conf";
  const container = await new GenericContainer(IMAGE)
    .withCopyContentToContainer([{ content: nginxConfig(NODE), target: conf }, ...APP_FILES])
    .withCommand(["sh", "-c", `/usr/sbin/nginx -c ${conf} && exec sleep infinity`])
    .withExposedPorts(8080, 8081)
    .withWaitStrategy(Wait.forHttp("/_backend/arrivals", 8081).forStatusCode(200))
    .withStartupTimeout(30_000)
    .start();
  const host = container.getHost();
  return new NginxNode(container, `http://${host}:${container.getMappedPort(8080)}`, `http://${host}:${container.getMappedPort(8081)}`);
}

describe("the outage prober through a binary upgrade (USR2 + QUIT, 2 workers)", () => {
  let node: NginxNode;
  after(async () => node?.container.stop({ timeout: 2 }));

  it("the old master's workers, exiting, go on probing their own zones' outage: their held requests are released when the application returns", async () => {
    node = await startDaemon();
    const single = appAt(SINGLE);
    await single.start(node);
    await single.stop(node);
    const held: Held[] = [await startOutage(node, "app", "/app/u")];
    for (let i = 1; i <= 3; i++) held.push(await holdOne(node, "app", "/app/u", `u${i}`));
    const sh = async (cmd: string) => (await node.exec(["sh", "-c", cmd])).trim();
    const old = Number(await sh("cat /run/nginx.pid"));
    const started = (await node.errorLog()).match(/start worker process/g)?.length ?? 0;
    await sh(`kill -USR2 ${old}`);
    await waitFor("the new master and its 2 workers", async () => ((await node.errorLog()).match(/start worker process/g)?.length ?? 0) >= started + 2);
    const quitting = (await node.errorLog()).match(/gracefully shutting down/g)?.length ?? 0;
    await sh(`kill -QUIT ${old}`);
    await waitFor("the old workers shutting down", async () => ((await node.errorLog()).match(/gracefully shutting down/g)?.length ?? 0) >= quitting + 2);
    // The new master's zones are new: it knows no outage, and no request comes.
    const { replies, slowest, startMs } = await backAndReplies(node, single, held);
    for (const r of replies) assert.equal(r.reply.status, 200, `${r.id}: ${r.reply.status} ${r.reply.body}`);
    console.log(`[figure] binary upgrade: ${held.length} held requests of the old master's workers answered 200 ${startMs + slowest} ms after starting the application (seen listening at ${startMs} ms)`);
    assert.ok(slowest < FLOWS_WITHIN, `released ${slowest} ms after the application was listening`);
    await waitFor("the old master exited", async () => /^(Z|)$/.test(await sh(`awk '{print $3}' /proc/${old}/stat 2>/dev/null || true`)), 5000);
    assert.equal((await get(node.url("/app/u?id=new"))).status, 200);
    await node.assertCleanLog([REQUEST_CONNECT]);
  });
});
