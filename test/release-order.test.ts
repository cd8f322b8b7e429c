// Breaker: attacks on the release protocol (black box, README + INTERFACE only).
// Each test states what the docs promise; a failing one is a finding.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";
import { waitFor } from "./harness/http.ts";
import { ids, sleep, holdInOrder } from "./harness/held.ts";

/** README: every request ends; status returns to held 0 / queued 0 / leases 0 / in_flight 0. */
async function assertIdle(node: NginxNode, scope = "default", ms = 5000): Promise<void> {
  let last: any;
  try {
    await waitFor(`scope ${scope} idle`, async () => {
      last = await node.status(scope);
      return last.held === 0 && last.queued === 0 && last.release.leases === 0 && last.in_flight === 0 && last.draining === false;
    }, ms);
  } catch (e) {
    assert.fail(`not idle: held=${last?.held} queued=${last?.queued} leases=${last?.release?.leases} in_flight=${last?.in_flight} draining=${last?.draining}`);
  }
}

describe("break: max_hold shorter than the drain (window 1, reject)", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ setup: { release_window: 1, max_hold: 2, on_timeout: "reject" } });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("no request waits past max_hold; the 503s never reach the upstream; order exact; idle after", async () => {
    // README: "No request waits longer than max_hold ... Then on_timeout applies: 503".
    // "release_window = 1 makes the upstream order exact."
    await node.control("pause", "ttl=0");
    const paths = ids("m", 12).map((id) => `/?id=${id}&delay=0.4`);
    const pending = await holdInOrder(node, paths);
    await node.control("resume");
    const replies = await Promise.all(pending.map((p) => p.reply));
    const ok = replies.map((r, i) => (r.status === 200 ? `m${i + 1}` : null)).filter(Boolean);
    for (const r of replies) {
      assert.ok(r.status === 200 || r.status === 503, `status ${r.status}`);
      if (r.status === 503) assert.ok(r.ms < 2000 + 700, `a 503 waited ${Math.round(r.ms)} ms > max_hold`);
      else assert.ok(r.ms < 2000 + 400 + 700, `a 200 was granted after its max_hold: ${Math.round(r.ms)} ms`);
    }
    assert.ok(ok.length >= 2 && ok.length < 12, `some released, some timed out: ${ok.length}`);
    const arr = await node.arrivals();
    assert.deepEqual(arr.ids, ok, "exactly the 200s reached the upstream, in hold order");
    assert.ok(Math.max(...arr.concurrency) <= 1, `window 1: ${arr.concurrency}`);
    await assertIdle(node);
  });
});

describe("break: reload in the middle of a drain", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ setup: { release_window: 1, max_hold: 30 } });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("every held request is released once, in order, window 1 respected, idle after", async () => {
    // README: "nginx -s reload during a pause loses nothing ... released on resume exactly once".
    await node.control("pause", "ttl=0");
    const pending = await holdInOrder(node, ids("r", 10).map((id) => `/?id=${id}&delay=0.3`));
    await node.control("resume");
    await waitFor("the drain to start", async () => (await node.arrivals()).ids.length >= 2);
    await node.reload();
    const replies = await Promise.all(pending.map((p) => p.reply));
    assert.deepEqual(replies.map((r) => r.status), replies.map(() => 200));
    const arr = await node.arrivals();
    assert.deepEqual(arr.ids, ids("r", 10));
    assert.ok(Math.max(...arr.concurrency) <= 1, `window 1 across the reload: ${arr.concurrency}`);
    await assertIdle(node);
  });

  it("a pause and reload while the backlog drains, then resume: nothing lost, nothing forwarded while paused", async () => {
    await node.resetBackend();
    await node.control("pause", "ttl=0");
    const pending = await holdInOrder(node, ids("p", 8).map((id) => `/?id=${id}&delay=0.3`));
    await node.control("resume");
    await waitFor("the drain to start", async () => (await node.arrivals()).ids.length >= 2);
    await node.control("pause", "ttl=0");
    await node.reload();
    // Paused, nothing leaves before max_hold (30 s): held counts the rest of the backlog and
    // stays put, so each late request must add exactly one to it (held, not forwarded).
    const late = await holdInOrder(node, ["/?id=late1", "/?id=late2"], "default");
    await sleep(1500);
    const during = (await node.arrivals()).ids;
    assert.ok(!during.includes("late1") && !during.includes("late2"), `forwarded while paused: ${during}`);
    await node.control("resume");
    const replies = await Promise.all([...pending, ...late].map((p) => p.reply));
    assert.deepEqual(replies.map((r) => r.status), replies.map(() => 200));
    const arr = await node.arrivals();
    assert.deepEqual([...arr.ids].sort(), [...ids("p", 8), "late1", "late2"].sort(), "each exactly once");
    await assertIdle(node);
  });
});

describe("break: worker_shutdown_timeout cuts an in-flight request", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ mainDirectives: "worker_shutdown_timeout 1s;", setup: { max_hold: 30 } });
  });
  after(async () => node?.stop());
  // The recording backend runs in the same nginx: when the shutdown timeout cuts its side
  // of the request, the front logs that its upstream closed the connection.
  afterEach(async () => node.assertCleanLog([/upstream prematurely closed connection while reading response header/]));

  it("in_flight returns to 0 once the old worker is gone, so a drain stays honest", async () => {
    // README: "in_flight counts every request on the node between access() and log()";
    // a drain "waits for requests already in flight". A request whose worker is gone is
    // no longer in flight anywhere; if it stays counted, every later drain waits its full bound.
    const long = node.send("/?id=long&delay=20");
    long.reply.catch(() => undefined);
    await waitFor("in flight", async () => (await node.status()).in_flight === 1);
    await node.reload();
    await sleep(3500);
    const s = await node.status();
    const d = (await node.control("pause", "drain=1")).json();
    await node.control("resume");
    assert.equal(s.in_flight, 0, `in_flight after the old worker exited: ${s.in_flight}`);
    assert.equal(d.drained, true, JSON.stringify(d));
  });
});

describe("break: TTL expiring during a drain, then paused again", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ setup: { release_window: 1, max_hold: 30, on_timeout: "reject" } });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("the auto-resume releases in order; a second pause holds new arrivals; all answered once", async () => {
    await node.control("pause", "ttl=1.5");
    const pending = await holdInOrder(node, ids("t", 6).map((id) => `/?id=${id}&delay=0.4`));
    await waitFor("the TTL to resume", async () => (await node.arrivals()).ids.length >= 1, 5000);
    await node.control("pause", "ttl=0");
    const late = [node.send("/?id=late1"), node.send("/?id=late2")];
    await sleep(2000);
    const during = (await node.arrivals()).ids;
    assert.ok(!during.includes("late1") && !during.includes("late2"), `forwarded while paused: ${during}`);
    await node.control("resume");
    const replies = await Promise.all([...pending, ...late].map((p) => p.reply));
    assert.deepEqual(replies.map((r) => r.status), replies.map(() => 200));
    const arr = await node.arrivals();
    assert.deepEqual(arr.ids.filter((i) => i.startsWith("t")), ids("t", 6), "backlog order exact");
    assert.equal(arr.ids.length, 8, `each once: ${arr.ids}`);
    await assertIdle(node);
  });
});
