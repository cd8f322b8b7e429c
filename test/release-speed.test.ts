// The release's pace (issue 23, item 2): a ticket granted in a log() or header_filter()
// (a released request's lease came back, and the window lets the next one go) wakes its
// waiter in that worker at once, not at the watcher's next poll. Each poll it waited cost
// the window an idle slot, and slow start grows only as leases come back, so every round
// of its ramp waited for a poll too.
//
// Made visible with one worker and poll_interval at its largest (1 s): today's poll is
// 2 ms, but a grant that waits for a poll waits a whole second here, so the test needs no
// timing finer than that. A release of 20 requests (window 1, 2, 8, 64 as they answer)
// takes under half a poll with the wake-up, and a poll or more per round without it.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";
import { ids, holdInOrder, assertIdle } from "./harness/held.ts";

describe("the release's pace: a grant made in a log or header_filter phase wakes its waiter at once", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ workers: 1, setup: { poll_interval: 1 } });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("one worker, poll_interval 1 s: 20 held requests are all answered within 0.5 s of the resume", async (t) => {
    await node.resetBackend();
    await node.control("pause");
    const held = await holdInOrder(node, ids("/?id=pace", 20));
    const t0 = performance.now();
    const answered = held.map((p) => p.reply.then((r) => ({ status: r.status, ms: performance.now() - t0 })));
    await node.control("resume");
    const results = await Promise.all(answered);
    for (const r of results) assert.equal(r.status, 200);
    const last = Math.max(...results.map((r) => r.ms));
    t.diagnostic(`the last of 20 answered ${Math.round(last)} ms after the resume (poll_interval 1000 ms)`);
    assert.ok(last < 500, `the last held request was answered ${Math.round(last)} ms after the resume: the release waited for the watcher's poll`);
    // Every one reached the backend once (granted in ticket order; with the window above 1
    // the upstream may see neighbours swap, as in the bench's in_order_fraction). The
    // window it grew to is gone with the scope's state once the release is over (an idle
    // scope is reclaimed: reclaim.ts), so it is not read here.
    assert.deepEqual([...(await node.arrivals()).ids].sort(), ids("pace", 20).sort());
    await assertIdle(node);
  });
});
