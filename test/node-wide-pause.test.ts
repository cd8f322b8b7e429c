// The scope `default` is the whole node (issue 21): a pause or maintenance of default,
// which a control request naming no scope gets from a control location that sets none,
// covers every request on the node whose own scope runs; a scope's own pause or
// maintenance comes first for its requests; scope=X narrows a pause to X. And a pause
// that holds nothing leaves a trace: passed_unheld counts, per scope, the requests that
// passed while another scope was stopped.
// The harness node: `/` has no scope (default), `/other/` sets $intermission_scope other,
// `/seed/` the seed's $app_name seedapp.
import { describe, it, before, after, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";
import { holdInOrder } from "./harness/held.ts";

describe("a pause of default holds the whole node", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ setup: { release_window: 1, max_hold: 20 } });
  });
  after(async () => node?.stop());
  beforeEach(async () => node.reset());
  afterEach(async () => node.assertCleanLog());

  it("holds requests of scoped locations in default's queue and releases them in arrival order", async () => {
    const paused = (await node.control("pause")).json();
    assert.equal(paused.scope, "default");
    assert.equal(paused.applies_to, "node");
    const order = ["/other/?id=o1", "/?id=d1", "/seed/?id=s1", "/other/?id=o2", "/seed/?id=s2"];
    const pending = await holdInOrder(node, order);
    assert.deepEqual((await node.arrivals()).ids, [], "nothing reached the upstream while paused");
    const other = await node.status("other");
    assert.equal(other.held, 0, "held in default's queue, not in other's");
    assert.equal(other.state, "running");
    assert.equal(other.node_state, "paused", "other's status says the whole node is paused");
    const resumed = (await node.control("resume")).json();
    assert.equal(resumed.released, 5);
    assert.equal(resumed.applies_to, "node");
    for (const p of pending) assert.equal((await p.reply).status, 200);
    assert.deepEqual((await node.arrivals()).ids, ["o1", "d1", "s1", "o2", "s2"]);
    assert.equal((await node.status()).counters.released, 5);
  });

  it("a scope's own pause or maintenance, begun while its requests wait in default's queue, comes first for them at default's resume", async () => {
    await node.control("pause", "ttl=0");
    const pending = await holdInOrder(node, ["/other/?id=o1", "/?id=d1", "/other/?id=o2", "/seed/?id=s1"]);
    assert.equal((await node.control("pause", "scope=other&ttl=0")).status, 200);
    assert.equal((await node.control("maintenance", "scope=seedapp")).status, 200);
    await node.control("resume");
    // default's own request goes; other's two are held by other's pause, seedapp's is
    // answered by its maintenance.
    assert.equal((await pending[1].reply).status, 200);
    assert.equal((await pending[3].reply).status, 503, "seedapp is in maintenance");
    await node.held(2, "other");
    assert.deepEqual((await node.arrivals()).ids, ["d1"], "nothing of other reached the upstream while other is paused");
    await node.control("resume", "scope=other");
    for (const p of [pending[0], pending[2]]) assert.equal((await p.reply).status, 200);
    assert.deepEqual((await node.arrivals()).ids, ["d1", "o1", "o2"]);
  });

  it("a maintenance of default answers every scope that runs 503", async () => {
    await node.control("maintenance");
    for (const p of ["/?id=m1", "/other/?id=m2", "/seed/?id=m3"]) {
      const r = await node.get(p);
      assert.equal(r.status, 503, p);
      assert.ok(r.ms < 1000, `${p} answered at once, took ${r.ms} ms`);
    }
    await node.control("resume");
    assert.equal((await node.get("/other/?id=after")).status, 200);
    assert.deepEqual((await node.arrivals()).ids, ["after"]);
  });

  it("a scope's own maintenance wins over default's pause, and its own pause over default's maintenance", async () => {
    await node.control("maintenance", "scope=other");
    await node.control("pause", "ttl=0");
    const [held] = await holdInOrder(node, ["/seed/?id=s1"]);
    const refused = await node.get("/other/?id=o1");
    assert.equal(refused.status, 503, "other is in maintenance itself: not held by default's pause");
    assert.ok(refused.ms < 1000, `answered at once, took ${refused.ms} ms`);
    await node.control("resume");
    assert.equal((await held.reply).status, 200);

    await node.control("pause", "ttl=0&scope=other");
    await node.control("maintenance");
    const [otherHeld] = await holdInOrder(node, ["/other/?id=o2"], "other");
    assert.equal((await node.get("/seed/?id=s2")).status, 503, "seedapp runs: default's maintenance applies");
    await node.control("resume", "scope=other");
    assert.equal((await otherHeld.reply).status, 200, "resuming other releases its own queue");
    assert.equal((await node.get("/seed/?id=s3")).status, 503, "default is still in maintenance");
    await node.control("resume");
    assert.deepEqual((await node.arrivals()).ids, ["s1", "o2"]);
  });

  it("scope=X narrows a pause to X; the others pass and are counted in passed_unheld", async () => {
    const before = (await node.status()).passed_unheld;
    const paused = (await node.control("pause", "scope=other")).json();
    assert.equal(paused.scope, "other");
    assert.equal(paused.applies_to, "scope");
    const [held] = await holdInOrder(node, ["/other/?id=o1"], "other");
    for (const p of ["/?id=d1", "/seed/?id=s1", "/seed/?id=s2"]) assert.equal((await node.get(p)).status, 200, p);
    assert.equal((await node.get("/up")).status, 200);
    const during = (await node.status("other")).passed_unheld;
    assert.equal((during.default ?? 0) - (before.default ?? 0), 1, "/ passed once (the health check /up is not counted)");
    assert.equal((during.seedapp ?? 0) - (before.seedapp ?? 0), 2);
    assert.equal(during.other ?? 0, before.other ?? 0, "other's requests were held, not passed");
    const metrics = (await node.control("metrics")).body;
    assert.match(metrics, new RegExp(`^intermission_passed_unheld_total\\{scope="seedapp"\\} ${during.seedapp}$`, "m"));
    await node.control("resume", "scope=other");
    assert.equal((await held.reply).status, 200);
    assert.deepEqual((await node.arrivals()).ids, ["d1", "s1", "s2", "-", "o1"], "/up reached the backend too (it has no id)");
    // Once every scope runs again the hot path counts nothing.
    await node.get("/seed/?id=s3");
    assert.deepEqual((await node.status()).passed_unheld, during);
  });
});
