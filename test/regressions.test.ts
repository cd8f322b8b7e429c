// Engine v2: one test per bug of the engine v1 (issue 9), each failing on v1's dist/,
// under the conditions that broke it: long pauses with clients that give up, steady
// load above the window, internal redirects, long-lived requests, many scopes, reloads
// with worker_shutdown_timeout, log() without access(), a resume quickly paused again.
import { describe, it, before, after, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { NginxNode } from "./harness/node.ts";
import { SCOPED_LOCATION } from "./harness/nginx-config.ts";
import { PendingRequest, get, post, waitFor } from "./harness/http.ts";
import { ids, sleep, holdInOrder } from "./harness/held.ts";

/** Aborts held requests the way a user who gives up does, and waits until they are gone. */
async function giveUp(node: NginxNode, pending: PendingRequest[], scope = "default"): Promise<void> {
  for (const p of pending) {
    p.reply.catch(() => undefined);
    p.abort();
  }
  await node.held(0, scope);
}

describe("bug 1: a long pause with clients that gave up", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ setup: { release_window: 1, max_hold: 3, retry_after: 2 } });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("after a pause longer than max_hold + 60 s, abandoned tickets neither strand nor throttle anyone", async () => {
    // default: clients give up while paused. other: held requests answered 503 by maintenance.
    await node.control("pause", "ttl=0");
    await giveUp(node, await holdInOrder(node, ids("/?id=gone", 3)));
    await node.control("pause", "ttl=0&scope=other");
    const answered = await holdInOrder(node, ids("/other/?id=m", 2), "other");
    await node.control("maintenance", "scope=other");
    for (const p of answered) assert.equal((await p.reply).status, 503);

    // v1 kept a ticket's "left" marker max_hold + 60 s: let that pass, frozen.
    await sleep(64_000);
    const live = await holdInOrder(node, ["/?id=live1", "/?id=live2"]);
    await node.control("resume");
    await node.control("resume", "scope=other");
    for (const p of live) assert.equal((await p.reply).status, 200);
    assert.equal((await node.get("/other/?id=after")).status, 200);
    assert.deepEqual((await node.arrivals()).ids, ["live1", "live2", "after"]);
    const status = await node.status();
    assert.equal(status.held, 0);
    assert.equal(status.queued, 0);
    assert.equal(status.release.leases, 0);
  });

  it("a resume with only abandoned tickets runs at once (no lingering drain)", async () => {
    await node.resetBackend();
    await node.control("pause");
    await giveUp(node, await holdInOrder(node, ids("/?id=x", 3)));
    const resumed = (await node.control("resume")).json();
    assert.equal(resumed.draining, false, JSON.stringify(resumed));
    const status = await node.status();
    assert.equal(status.state, "running");
    assert.equal(status.draining, false);
    assert.equal(status.queued, 0);
  });

  it("metrics settle an expired pause before they report it", async () => {
    const { until } = (await node.control("pause", "ttl=0.3")).json();
    await waitFor("the pause to expire", async () => Date.now() / 1000 > until + 0.05);
    const text = (await node.get("/_intermission/metrics")).body;
    assert.match(text, /intermission_state\{scope="default",state="running"\} 1/);
  });
});

/** Keeps `connections` request loops running until stop(); records every reply. */
function steadyLoad(base: string, connections: number, path: (n: number) => string) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  const replies: { status: number; at: number; id: string }[] = [];
  let running = true;
  let n = 0;
  const loops = Array.from({ length: connections }, async () => {
    while (running) {
      const id = `s${++n}`;
      const status = await new Promise<number>((resolve) => {
        const req = http.get(base + path(n).replace("{id}", id), { agent }, (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode ?? 0));
        });
        req.on("error", () => resolve(0));
      });
      replies.push({ status, at: Date.now(), id });
    }
  });
  return {
    replies,
    async stop() {
      running = false;
      await Promise.all(loops);
      agent.destroy();
    },
  };
}

describe("bug 2: steady traffic above the window after a resume", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ setup: { release_window: 2, max_hold: 10 } });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("the drain ends once the backlog is granted, and the window stops pacing", async () => {
    const load = steadyLoad(node.base, 12, () => "/?id={id}&delay=0.05");
    let drainMs = 0;
    try {
      await sleep(1000);
      await node.control("pause");
      await sleep(500);
      await node.resetBackend();
      const resumed = Date.now();
      await node.control("resume");
      // v1 stayed draining for as long as the load lasted, at window / latency.
      await waitFor("the drain to end under steady load", async () => (await node.status()).draining === false, 3000);
      drainMs = Date.now() - resumed;
      await sleep(1000);
    } finally {
      await load.stop();
    }
    assert.ok(load.replies.every((r) => r.status === 200), `all answered 200: ${load.replies.filter((r) => r.status !== 200).length} not`);
    const { concurrency } = await node.arrivals();
    assert.ok(Math.max(...concurrency) > 2, `after the drain (${drainMs} ms) the backend sees the load's concurrency, not the window's: ${Math.max(...concurrency)}`);
  });
});

describe("bugs 3 and 4: hooks at server level, internal redirects, streams, the control location", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({
      hooks: "server",
      setup: { release_window: 1, max_hold: 3, release_lease: 30 },
      extraLocations: `
        location /broken/ {
            proxy_pass http://127.0.0.1:9;
            error_page 502 /50x.html;
        }
        location = /50x.html { return 200 "sorry\\n"; }
        location /tf/ {
            try_files /nonexistent @app;
        }
        location @app {
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://backend;
        }`,
    });
  });
  after(async () => node?.stop());
  beforeEach(async () => node.reset());
  afterEach(async () => node.assertCleanLog([/connect\(\) failed \(111: Connection refused\)/]));

  it("the control API is never held by server-level hooks", async () => {
    await node.control("pause");
    const status = await get(node.url("/_intermission/status"), { timeoutMs: 2000 });
    assert.equal(status.status, 200);
    assert.equal((await post(node.url("/_intermission/resume"))).status, 200);
  });

  it("a released request that ends in error_page gives its slot back (and its error page is not held)", async () => {
    await node.control("pause");
    const [broken, next] = await holdInOrder(node, ["/broken/?id=b1", "/?id=n1"]);
    await node.control("resume");
    const b = await broken.reply;
    assert.equal(b.status, 502);
    assert.match(b.body, /sorry/);
    const n = await next.reply;
    assert.equal(n.status, 200, "the next request is released, not stranded behind a lost slot");
    await waitFor("nothing in flight", async () => (await node.status()).in_flight === 0);
    assert.equal((await node.status()).release.leases, 0);
  });

  it("a request held in a location and its try_files target is held once, under one ticket", async () => {
    const before = (await node.status()).counters;
    await node.control("pause");
    const pending = await holdInOrder(node, ids("/tf/?id=t", 3));
    await node.control("resume");
    for (const p of pending) assert.equal((await p.reply).status, 200);
    assert.deepEqual((await node.arrivals()).ids, ids("t", 3));
    const after = (await node.status()).counters;
    assert.equal(after.held - before.held, 3, "each request counted as held once");
    assert.equal(after.released - before.released, 3);
    await waitFor("nothing in flight", async () => (await node.status()).in_flight === 0);
  });

  it("a released stream gives its slot back when its response starts", async () => {
    await node.control("pause");
    const [stream, ...rest] = await holdInOrder(node, ["/?id=sse&stream=6", "/?id=after1", "/?id=after2"]);
    await node.control("resume");
    for (const p of rest) assert.equal((await p.reply).status, 200, "released while the stream runs");
    stream.abort();
    stream.reply.catch(() => undefined);
  });
});

describe("bug 4: long polls among the released", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ setup: { release_window: 2, max_hold: 6, release_lease: 1 } });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("a window's worth of long polls does not pin it: their leases expire", async () => {
    await node.control("pause");
    const polls = await holdInOrder(node, ["/?id=poll1&delay=9", "/?id=poll2&delay=9"]);
    const shorts = await holdInOrder(node, ids("/?id=short", 3));
    await node.control("resume");
    for (const p of shorts) {
      const r = await p.reply;
      assert.equal(r.status, 200, "released once the long polls' leases ran out, before max_hold");
    }
    for (const p of polls) assert.equal((await p.reply).status, 200);
  });
});

describe("bug 5: the state zone never forgets, and scopes are bounded", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({
      setup: { max_scopes: 300 },
      extraLocations: SCOPED_LOCATION,
    });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("hundreds of scopes with long reasons keep every state; one beyond max_scopes is refused", async () => {
    const reason = "r".repeat(500);
    assert.equal((await node.control("maintenance", `scope=kept&reason=${reason}`)).status, 200);
    // Paused, so live: an idle scope is reclaimed (issue 23) and would not count.
    for (let i = 0; i < 299; i++) {
      const scope = `s${i}`;
      assert.equal((await node.control("pause", `scope=${scope}&reason=${reason}&ttl=0`)).status, 200, scope);
    }
    const refused = await node.control("pause", "scope=onetoomany");
    assert.equal(refused.status, 409, refused.body);
    assert.match(refused.json().error, /max_scopes = 300/);
    assert.equal((await node.get("/scoped/?scope=onetoomany&id=x")).status, 200, "the refused scope was not paused");
    // Once they resume, they are idle and reclaimed: a new scope fits again.
    for (let i = 0; i < 299; i++) assert.equal((await node.control("resume", `scope=s${i}`)).status, 200);
    assert.equal((await node.control("pause", "scope=onetoomany")).status, 200);
    assert.equal((await node.control("resume", "scope=onetoomany")).status, 200);
    // The first scope is still in maintenance, every other one runs.
    assert.equal((await node.get("/scoped/?scope=kept&id=k")).status, 503);
    assert.equal((await node.get("/scoped/?scope=s0&id=a")).status, 200);
    assert.equal((await node.get("/scoped/?scope=s298&id=b")).status, 200);
    const status = await node.status("kept");
    assert.equal(status.state, "maintenance");
    assert.equal(status.reason, reason);
    assert.ok(status.shared_dict.state.free_kib > 0);
    assert.equal((await node.control("resume", "scope=kept")).status, 200);
    assert.equal((await node.get("/scoped/?scope=kept&id=k2")).status, 200);
  });
});

describe("bug 6: a reload with worker_shutdown_timeout mid-pause", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({
      mainDirectives: "worker_shutdown_timeout 1s;",
      setup: { max_held: 4, max_hold: 30, release_window: 4 },
    });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("killed held requests give back their places; the old workers go; the next pause works", async () => {
    await node.control("pause", "ttl=0");
    const killed = await holdInOrder(node, ids("/?id=k", 3));
    for (const p of killed) p.reply.catch(() => undefined);
    await node.reload();
    await waitFor("the killed requests to leave the count", async () => (await node.status()).held === 0, 5000);
    await waitFor("the old workers to exit", async () => (await node.shuttingDownWorkers()) === 0, 4000);
    for (const p of killed) await assert.rejects(p.reply, "cut off by the shutdown timeout");
    // v1 still counted the 3 dead requests: with max_held 4 the second of these was "full".
    const fresh = await holdInOrder(node, ["/?id=f1", "/?id=f2"]);
    await node.control("resume");
    for (const p of fresh) assert.equal((await p.reply).status, 200);
    assert.deepEqual((await node.arrivals()).ids, ["f1", "f2"]);
    const status = await node.status();
    assert.equal(status.queued, 0);
    assert.equal(status.release.leases, 0);
  });
});

describe("bug 7: log() without access()", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({
      workers: 1,
      extraLocations: `
        location /denied/ {
            deny all;
            access_by_lua_block { require("intermission").access() }
            log_by_lua_block    { require("intermission").log() }
            proxy_pass http://backend;
        }
        location /returned/ {
            return 403;
            log_by_lua_block    { require("intermission").log() }
        }`,
    });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog([/access forbidden by rule/]));

  it("requests rejected before access() leave the in-flight count alone, so drain stays honest", async () => {
    const slow = node.send("/?id=slow&delay=2");
    await waitFor("the slow request in flight", async () => (await node.status()).in_flight === 1);
    for (let i = 0; i < 5; i++) {
      assert.equal((await node.get("/denied/")).status, 403);
      assert.equal((await node.get("/returned/")).status, 403);
    }
    assert.equal((await node.status()).in_flight, 1);
    const drained = (await node.control("pause", "drain=0.3")).json();
    assert.equal(drained.drained, false);
    assert.equal(drained.in_flight, 1);
    await node.control("resume");
    assert.equal((await slow.reply).status, 200);
    await waitFor("nothing in flight", async () => (await node.status()).in_flight === 0);
  });
});

describe("bug 8: a resume quickly paused again", () => {
  let node: NginxNode;
  before(async () => {
    // A slow watcher poll widens the gap between a grant and the wake-up in another worker.
    node = await NginxNode.start({ setup: { release_window: 16, max_hold: 5, poll_interval: 1, on_timeout: "reject" } });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("granted requests are woken and forwarded at once even when paused again, never refused at max_hold", async () => {
    // README (bug 8): "granted requests are woken whatever the mode"; "A grant is honoured
    // whatever comes after it". Paused again, the head no longer moves, so the tickets it
    // passed (queued = tickets issued - head) are exactly the granted ones: each must be
    // answered 200 at once. A granted request left asleep would be woken by its deadline
    // and refused as late: 503 at max_hold (5 s).
    await node.control("pause");
    const pending = await holdInOrder(node, ids("/?id=g", 10));
    await node.control("resume");
    await node.control("pause");
    const queued = (await node.status()).queued;
    const granted = pending.length - queued;
    // resume() runs the release step itself: the window (slow start, 1) grants g1 at least
    assert.ok(granted >= 1, `the resume granted nothing before the pause (queued ${queued})`);
    const replies = await Promise.all(pending.map((p) => p.reply));
    const summary = replies.map((r, i) => `g${i + 1}:${r.status}@${Math.round(r.ms)}ms`).join(" ");
    // held in order, granted in order: the first `granted` are the granted ones
    assert.deepEqual(replies.map((r) => r.status), replies.map((_, i) => (i < granted ? 200 : 503)), `${granted} granted: ${summary}`);
    for (const r of replies.slice(0, granted)) assert.ok(r.ms < 4000, `a granted request went at once, not at max_hold: ${summary}`);
    // Granted in ticket order; with the window above 1 two of them go upstream at once, and
    // the upstream may see neighbours swap (README: release_window 1 gives strict order).
    assert.deepEqual([...(await node.arrivals()).ids].sort(), ids("g", granted).sort(), "exactly the granted ones reached the upstream");
    await node.control("resume");
  });
});
