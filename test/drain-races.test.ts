// Breaker: order, window and per-location max time under races (black box).
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";
import { waitFor } from "./harness/http.ts";
import { ids, sleep, holdInOrder, assertIdle } from "./harness/held.ts";

describe("break: window 1, two workers, control races during the drain", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ workers: 2, setup: { release_window: 1, max_hold: 30, pause_ttl: 0 } });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("the upstream order is exactly the hold order and concurrency never exceeds 1", async () => {
    // README: "Tickets are granted strictly in arrival order ... release_window = 1 makes
    // the upstream order exact."
    await node.control("pause");
    const pending = await holdInOrder(node, ids("o", 20).map((id) => `/?id=${id}&delay=0.05`));
    await node.control("resume");
    await Promise.all(Array.from({ length: 3 }, async (_, k) => {
      for (let i = 0; i < 16; i++) {
        await node.control((i + k) % 2 ? "resume" : "pause");
        await sleep(Math.random() * 30);
      }
    }));
    await node.control("resume");
    const replies = await Promise.all(pending.map((p) => p.reply));
    assert.deepEqual(replies.map((r) => r.status), replies.map(() => 200));
    const arr = await node.arrivals();
    assert.deepEqual(arr.ids, ids("o", 20));
    assert.ok(Math.max(...arr.concurrency) <= 1, `concurrency ${arr.concurrency}`);
    await assertIdle(node);
  });
});

describe("break: window 3 with two workers and a slow backend", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ workers: 2, setup: { release_window: 3, max_hold: 30 } });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("never more than 3 of the backlog at the backend at once", async () => {
    // INTERFACE: "release_window: at most this many released requests in flight to the upstream while a queue drains".
    await node.control("pause", "ttl=0");
    const pending = ids("w", 40).map((id) => node.send(`/?id=${id}&delay=0.1`));
    await node.held(40);
    await node.control("resume");
    const replies = await Promise.all(pending.map((p) => p.reply));
    assert.deepEqual(replies.map((r) => r.status), replies.map(() => 200));
    const arr = await node.arrivals();
    assert.equal(new Set(arr.ids).size, 40);
    assert.ok(Math.max(...arr.concurrency) <= 3, `concurrency ${arr.concurrency}`);
    await assertIdle(node);
  });
});

describe("break: $intermission_max_time per location during a slow drain", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ workers: 2, setup: { release_window: 1, max_hold: 30, on_timeout: "reject" } });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("requests in /short/ (max time 1 s) behind slow ones wait at most 1 s; timed-out ones never reach the upstream", async () => {
    // README: "No request waits longer than max_hold (or $intermission_max_time)".
    await node.control("pause", "ttl=0");
    const slow = await holdInOrder(node, ids("slow", 3).map((id) => `/?id=${id}&delay=0.8`));
    const t0 = Date.now();
    const short = await holdInOrder(node, ids("short", 3).map((id) => `/short/?id=${id}`));
    const heldFor = Date.now() - t0;
    await node.control("resume");
    const rs = await Promise.all(short.map((p) => p.reply));
    for (const r of rs) {
      assert.ok(r.status === 503 || r.status === 200);
      assert.ok(r.ms < 1000 + 600, `a /short/ request waited ${Math.round(r.ms)} ms (held ${heldFor} ms)`);
    }
    for (const p of slow) assert.equal((await p.reply).status, 200);
    const arr = (await node.arrivals()).ids;
    const okShort = rs.map((r, i) => (r.status === 200 ? `short${i + 1}` : null)).filter(Boolean);
    assert.deepEqual(arr.filter((i) => i.startsWith("short")), okShort, "only the 200s reached the upstream");
    await assertIdle(node);
  });
});

describe("break: maintenance in the middle of a drain", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ workers: 2, setup: { release_window: 1, max_hold: 30 } });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("the rest of the backlog is answered 503 and never reaches the upstream; idle after", async () => {
    // README: maintenance: "Held requests are answered 503 too."
    await node.control("pause", "ttl=0");
    const pending = await holdInOrder(node, ids("x", 10).map((id) => `/?id=${id}&delay=0.3`));
    await node.control("resume");
    await waitFor("two released", async () => (await node.arrivals()).ids.length >= 2);
    await node.control("maintenance", "ttl=0");
    const replies = await Promise.all(pending.map((p) => p.reply));
    const ok = replies.map((r, i) => (r.status === 200 ? `x${i + 1}` : null)).filter(Boolean);
    assert.ok(replies.every((r) => r.status === 200 || r.status === 503));
    assert.ok(ok.length < 10, "maintenance stopped the rest");
    await sleep(500);
    assert.deepEqual((await node.arrivals()).ids, ok, "exactly the 200s reached the upstream, in order");
    await node.control("resume");
    const s = await assertIdle(node);
    const c = s.counters;
    assert.equal(c.held + c.retried, c.released + c.timed_out + c.aborted + c.maintenance, JSON.stringify(c));
  });
});
