// Breaker: max_held under a concurrent burst across two workers (black box).
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";
import { waitFor } from "./harness/http.ts";
import { sleep } from "./harness/held.ts";

describe("break: max_held with two workers and a concurrent burst", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ workers: 2, setup: { max_held: 50, max_hold: 20, release_window: 8, retry_after: 3 } });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("never more than max_held held; the rest 503 + Retry-After at once, never forwarded; idle after", async () => {
    // INTERFACE: "max_held: held requests per node per scope; beyond it a request gets 503 + Retry-After at once".
    await node.control("pause", "ttl=0");
    const pending = Array.from({ length: 200 }, (_, i) => node.send(`/?id=h${i + 1}`));
    let maxSeen = 0;
    const watch = (async () => {
      for (let i = 0; i < 40; i++) { maxSeen = Math.max(maxSeen, (await node.status()).held); await sleep(25); }
    })();
    await watch;
    const s = await node.status();
    assert.ok(maxSeen <= 50 && s.held <= 50, `held ${maxSeen} > max_held 50`);
    assert.equal(s.held, 50, "the queue fills to max_held");
    await node.control("resume");
    const replies = await Promise.all(pending.map((p) => p.reply));
    const ok = replies.filter((r) => r.status === 200);
    const rejected = replies.filter((r) => r.status === 503);
    assert.equal(ok.length + rejected.length, 200);
    assert.equal(ok.length, 50);
    for (const r of rejected) {
      assert.equal(r.headers["retry-after"], "3");
      assert.ok(r.ms < 2000, `rejected at once, not after ${Math.round(r.ms)} ms`);
    }
    const arr = (await node.arrivals()).ids;
    assert.equal(arr.length, 50, "only the held ones reached the upstream");
    await waitFor("idle", async () => {
      const x = await node.status();
      return x.held === 0 && x.queued === 0 && x.release.leases === 0 && x.in_flight === 0;
    });
    assert.equal((await node.status()).counters.rejected, 150);
  });
});
