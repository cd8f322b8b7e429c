// The hold-and-release engine on one node with two workers: order, backpressure,
// aborts, timeouts, TTL, the cap, scopes, maintenance, pass-through and reload.
import { describe, it, before, after, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";
import { waitFor } from "./harness/http.ts";
import { ids, holdInOrder } from "./harness/held.ts";

describe("engine, release window 1 (strict order), on_timeout reject", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({
      setup: { release_window: 1, retry_after: 7, privileged_user_agent: "Pingdom", max_hold: 20 },
    });
  });
  after(async () => node?.stop());
  beforeEach(async () => node.reset());
  afterEach(async () => node.assertCleanLog());

  it("releases held requests to the upstream in exactly the order they were held", async () => {
    await node.control("pause");
    const names = ids("o", 30);
    const pending = await holdInOrder(node, names.map((id) => `/?id=${id}`));
    assert.deepEqual((await node.arrivals()).ids, [], "nothing reaches the upstream while paused");
    await node.control("resume");
    const replies = await Promise.all(pending.map((p) => p.reply));
    assert.deepEqual(replies.map((r) => r.status), names.map(() => 200));
    const seen = await node.arrivals();
    assert.deepEqual(seen.ids, names);
    assert.ok(seen.concurrency.every((c) => c === 1), `window 1 means one at a time, saw ${seen.concurrency}`);
    const status = await node.status();
    assert.equal(status.counters.released, 30);
    assert.equal(status.state, "running");
  });

  it("an aborted request frees its place at once and never reaches the upstream", async () => {
    await node.control("pause");
    const names = ids("a", 6);
    const pending = await holdInOrder(node, names.map((id) => `/?id=${id}`));
    for (const i of [1, 3]) {
      pending[i].reply.catch(() => undefined);
      pending[i].abort();
    }
    await node.held(4);
    await node.control("resume");
    for (const i of [0, 2, 4, 5]) assert.equal((await pending[i].reply).status, 200);
    assert.deepEqual((await node.arrivals()).ids, ["a1", "a3", "a5", "a6"]);
    const status = await node.status();
    assert.equal(status.counters.aborted, 2);
    const log = await node.errorLog();
    assert.equal(log.match(/outcome=aborted/g)?.length, 2);
  });

  it("a held request that times out in front of others does not hold them up", async () => {
    await node.control("pause");
    const [short, b1, b2] = await holdInOrder(node, ["/short/?id=t1", "/?id=b1", "/?id=b2"]);
    const timedOut = await short.reply;
    assert.equal(timedOut.status, 503);
    assert.equal(timedOut.headers["retry-after"], "7");
    assert.ok(timedOut.ms >= 900 && timedOut.ms < 5000, `held for its 1 s max time, took ${timedOut.ms} ms`);
    await node.held(2);
    await node.control("resume");
    assert.equal((await b1.reply).status, 200);
    assert.equal((await b2.reply).status, 200);
    assert.deepEqual((await node.arrivals()).ids, ["b1", "b2"]);
    assert.equal((await node.status()).counters.timed_out, 1);
  });

  it("a pause with a TTL resumes by itself and releases what it held", async () => {
    const paused = await node.control("pause", "ttl=1&reason=ttl-test");
    assert.equal(paused.status, 200);
    assert.ok(paused.json().until > paused.json().since, "status says when it auto-resumes");
    const [held] = await holdInOrder(node, ["/?id=ttl1"]);
    const reply = await held.reply;
    assert.equal(reply.status, 200);
    assert.ok(reply.ms < 5000, `released by the TTL, took ${reply.ms} ms`);
    const status = await node.status();
    assert.equal(status.state, "running");
    assert.match(await node.errorLog(), /audit action=auto-resume scope=default reason=ttl-expired/);
  });

  it("an expired pause lets the next request through even with nothing held", async () => {
    const { until } = (await node.control("pause", "ttl=0.5")).json();
    // No status call in between: it would settle the expiry itself. The request must.
    await waitFor("the clock to pass the pause's until", async () => Date.now() / 1000 > until + 0.05);
    const reply = await node.get("/?id=after-ttl");
    assert.equal(reply.status, 200);
    assert.equal((await node.status()).state, "running");
  });

  it("holds only the paused scope ($intermission_scope, and the seed's $app_name)", async () => {
    await node.control("pause", "scope=other");
    const [otherHeld] = await holdInOrder(node, ["/other/?id=x1"], "other");
    assert.equal((await node.get("/?id=d1")).status, 200, "the default scope runs");
    assert.equal((await node.get("/seed/?id=s1")).status, 200, "the seedapp scope runs");
    await node.control("pause", "scope=seedapp");
    const [seedHeld] = await holdInOrder(node, ["/seed/?id=s2"], "seedapp");
    await node.control("resume", "scope=other");
    assert.equal((await otherHeld.reply).status, 200);
    assert.equal((await node.status("seedapp")).held, 1, "seedapp is still paused");
    await node.control("resume", "scope=seedapp");
    assert.equal((await seedHeld.reply).status, 200);
    assert.deepEqual((await node.arrivals()).ids, ["d1", "s1", "x1", "s2"]);
  });

  it("maintenance answers 503 + Retry-After at once, as a page or as JSON", async () => {
    for (const round of [1, 2]) {
      const m = await node.control("maintenance", `reason=upgrade${round}`);
      assert.equal(m.status, 200, m.body);
      assert.equal(m.json().state, "maintenance");
      const page = await node.get("/?id=m");
      assert.equal(page.status, 503);
      assert.equal(page.headers["retry-after"], "7");
      assert.match(String(page.headers["content-type"]), /text\/html/);
      assert.match(page.body, /Down for maintenance/);
      assert.ok(page.ms < 1000);
      const api = await node.get("/?id=m", { Accept: "application/json" });
      assert.equal(api.status, 503);
      assert.equal(api.json().cause, "maintenance");
      assert.equal(api.json().reason, `upgrade${round}`);
      await node.control("resume");
      assert.equal((await node.get("/?id=ok")).status, 200);
    }
    assert.deepEqual((await node.arrivals()).ids, ["ok", "ok"]);
  });

  it("switching a pause to maintenance answers the held requests 503", async () => {
    await node.control("pause");
    const pending = await holdInOrder(node, ["/?id=h1", "/?id=h2"]);
    await node.control("maintenance");
    for (const p of pending) assert.equal((await p.reply).status, 503);
    assert.equal((await node.status()).held, 0);
    assert.deepEqual((await node.arrivals()).ids, []);
  });

  it("health checks and the privileged user agent always pass", async () => {
    await node.control("pause");
    assert.equal((await node.get("/up")).status, 200);
    assert.equal((await node.get("/?id=pingdom", { "User-Agent": "Pingdom.com_bot_version_1.4" })).status, 200);
    await node.control("maintenance");
    assert.equal((await node.get("/up")).status, 200);
    assert.equal((await node.status()).held, 0);
  });

  it("new requests that arrive while the queue drains queue behind it", async () => {
    await node.control("pause");
    const pending = await holdInOrder(node, ids("q", 5).map((id) => `/?id=${id}&delay=0.1`));
    await node.control("resume");
    const late = node.send("/?id=late");
    await Promise.all([...pending, late].map((p) => p.reply));
    const seen = (await node.arrivals()).ids;
    // The backlog goes out one at a time, in order; the newcomer is granted only after
    // the last of it (then both race to the upstream: the drain no longer paces it).
    assert.deepEqual(seen.slice(0, 4), ids("q", 4));
    assert.deepEqual([...seen.slice(4)].sort(), ["late", "q5"]);
  });
});

describe("engine, release window 4, on_timeout pass, max_held 10", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({
      setup: { release_window: 4, on_timeout: "pass", max_held: 10, retry_after: 3 },
    });
  });
  after(async () => node?.stop());
  beforeEach(async () => node.reset());
  afterEach(async () => node.assertCleanLog([/queue full, rejected/]));

  it("never has more than release_window released requests in flight, and fills it", async () => {
    await node.control("pause");
    const names = ids("w", 10);
    const pending = await holdInOrder(node, names.map((id) => `/?id=${id}&delay=0.3`));
    await node.control("resume");
    const replies = await Promise.all(pending.map((p) => p.reply));
    assert.ok(replies.every((r) => r.status === 200));
    const seen = await node.arrivals();
    assert.deepEqual([...seen.ids].sort(), [...names].sort());
    assert.ok(Math.max(...seen.concurrency) <= 4, `window 4 exceeded: ${seen.concurrency}`);
    assert.equal(Math.max(...seen.concurrency), 4, `the window should fill: ${seen.concurrency}`);
    // Within a window requests race to the upstream, but none is more than a window late.
    seen.ids.forEach((id, i) => assert.ok(Math.abs(names.indexOf(id) - i) < 4, `${id} arrived at ${i}`));
  });

  it("beyond max_held a request gets 503 + Retry-After at once", async () => {
    await node.control("pause");
    const pending = await holdInOrder(node, ids("c", 10).map((id) => `/?id=${id}`));
    for (const round of [1, 2]) {
      const full = await node.get(`/?id=over${round}`);
      assert.equal(full.status, 503);
      assert.equal(full.headers["retry-after"], "3");
      assert.ok(full.ms < 1000, `rejected at once, took ${full.ms} ms`);
    }
    assert.equal((await node.status()).counters.rejected, 2);
    await node.control("resume");
    for (const p of pending) assert.equal((await p.reply).status, 200);
    assert.deepEqual([...(await node.arrivals()).ids].sort(), [...ids("c", 10)].sort());
  });

  it("with on_timeout = pass a request held past its max time is forwarded", async () => {
    await node.control("pause");
    const [p] = await holdInOrder(node, ["/short/?id=passed"]);
    const reply = await p.reply;
    assert.equal(reply.status, 200);
    assert.ok(reply.ms >= 900, `held for its max time first, took ${reply.ms} ms`);
    assert.deepEqual((await node.arrivals()).ids, ["passed"]);
    const status = await node.status();
    assert.equal(status.counters.timed_out, 1);
    assert.equal(status.counters.passed, 1);
    assert.equal(status.state, "paused");
  });
});

describe("engine across nginx -s reload", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ setup: { release_window: 1 } });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("keeps the pause, releases old workers' requests exactly once, and new workers hold", async () => {
    await node.control("pause", "reason=reload");
    const before = await holdInOrder(node, ids("old", 4).map((id) => `/?id=${id}`));
    await node.reload();
    // The new workers answer the control API and see the same state.
    await waitFor("the pause to survive the reload", async () => (await node.status()).state === "paused");
    const after = await holdInOrder(node, ids("new", 2).map((id) => `/?id=${id}`));
    await node.control("resume");
    const replies = await Promise.all([...before, ...after].map((p) => p.reply));
    assert.ok(replies.every((r) => r.status === 200), replies.map((r) => r.status).join(","));
    const seen = (await node.arrivals()).ids;
    assert.deepEqual([...seen].sort(), [...ids("new", 2), ...ids("old", 4)].sort(), "each exactly once");
    assert.deepEqual(seen.filter((id) => id.startsWith("old")), ids("old", 4), "old ones in order");
    // Without worker_shutdown_timeout the old workers stay as long as they hold requests,
    // and go once those are released: no timer or wait loop keeps them.
    await waitFor("the old workers to exit", async () => (await node.shuttingDownWorkers()) === 0, 2000);
    const status = await node.status();
    assert.equal(status.held, 0);
    assert.equal(status.queued, 0);
  });
});
