// Breaker: a probe URL that alternates 200/503; a retry location whose port never opens (black box).
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";
import { PendingRequest, waitFor } from "./harness/http.ts";
import { RETRY_ON_ERROR, retryLocation } from "./harness/nginx-config.ts";

async function holdInOrder(node: NginxNode, paths: string[]): Promise<PendingRequest[]> {
  const pending: PendingRequest[] = [];
  for (const [i, p] of paths.entries()) {
    pending.push(node.send(p));
    await node.held(i + 1);
  }
  return pending;
}

const EXTRA = `
        location = /flap {
            content_by_lua_block {
                local n = ngx.shared.backend:incr("flap", 1, 0)
                if n % 2 == 0 then return ngx.exit(503) end
                ngx.say("up")
            }
        }
        location /dead/ {
            access_by_lua_block        { require("intermission").access() }
            header_filter_by_lua_block { require("intermission").header_filter() }
            log_by_lua_block           { require("intermission").log() }
            proxy_pass http://127.0.0.1:9/;${RETRY_ON_ERROR}
        }${retryLocation(true)}`;

describe("break: ready_probe against a URL that flaps 200/503", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({
      workers: 2,
      setup: { release_window: 4, max_hold: 20, ready_probe: { url: "http://127.0.0.1:8080/flap", successes: 2, interval: 0.05, timeout: 2 } },
      extraLocations: EXTRA,
    });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("never two successes in a row: held until the probe's timeout, then released once each", async () => {
    // INTERFACE: "held requests stay held until url answers 2xx successes times in a row, or timeout passes".
    await node.control("pause", "ttl=0");
    const pending = await holdInOrder(node, ["/?id=f1", "/?id=f2", "/?id=f3"]);
    await node.control("resume");
    const replies = await Promise.all(pending.map((p) => p.reply));
    for (const r of replies) {
      assert.equal(r.status, 200);
      assert.ok(r.ms >= 1800, `released after ${Math.round(r.ms)} ms, before 2 successes in a row or the 2 s timeout`);
    }
    // Each once; with release_window 4 the README promises grant order, not arrival order
    // at the upstream ("release_window = 1 makes the upstream order exact").
    assert.deepEqual([...(await node.arrivals()).ids].sort(), ["f1", "f2", "f3"]);
    assert.match(await node.errorLog(), /timed out after 2s/);
    const s = await node.status();
    assert.equal(s.waiting_ready, false);
    assert.ok(s.counters.probe_failures > 0);
  });
});

describe("break: a retry location whose port never opens", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ workers: 2, setup: { release_window: 2, max_hold: 2, on_timeout: "reject" }, extraLocations: EXTRA });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog([/connect\(\) failed \(111: Connection refused\) while connecting to upstream/]));

  // Found by this test (fixed): after every retried request had timed out, the scope
  // stayed "draining" with queued 3 and a backlog, because passing over tickets that had
  // left waited for room in the window (closed by the back-off) and nobody came back.
  // README: "A ticket's fate is decided once ... or the request leaves first (client gone,
  // max_hold, maintenance)"; status "queued (tickets not yet decided)" returns to 0.
  it("retried within max_hold, then on_timeout applies (503), never a 500; idle after", async () => {
    // README: "the request's own max_hold bounds them; then on_timeout applies";
    // "intermission never turns a request into a 500".
    await node.control("pause", "ttl=0");
    const pending = await holdInOrder(node, ["/dead/?id=d1", "/dead/?id=d2", "/dead/?id=d3"]);
    await node.control("resume");
    const replies = await Promise.all(pending.map((p) => p.reply));
    for (const r of replies) {
      assert.equal(r.status, 503, `${r.status} ${r.body.slice(0, 100)}`);
      assert.ok(r.ms < 2000 + 1000, `answered after ${Math.round(r.ms)} ms`);
    }
    let x: any;
    await waitFor("idle", async () => {
      x = await node.status();
      return x.held === 0 && x.queued === 0 && x.release.leases === 0 && x.in_flight === 0 && x.draining === false;
    }, 10_000).catch(() => assert.fail(`not idle 10 s after the last answer: ${JSON.stringify(x)}`));
    const c = (await node.status()).counters;
    assert.ok(c.retried > 0);
    assert.equal(c.held + c.retried, c.released + c.timed_out + c.aborted + c.maintenance, JSON.stringify(c));
  });

  it("afterwards, a plain request and the next pause/resume cycle are not stuck behind that drain", async () => {
    // README: "once the backlog is granted, they are granted at once and the scope runs again".
    await node.resetBackend();
    const r = await node.get("/?id=after");
    assert.equal(r.status, 200);
    assert.ok(r.ms < 1000, `a request while running took ${Math.round(r.ms)} ms`);
    await node.control("pause", "ttl=0");
    const pending = await holdInOrder(node, ["/?id=n1", "/?id=n2"].map((p) => p));
    await node.control("resume");
    for (const p of pending) assert.equal((await p.reply).status, 200);
    let x: any;
    await waitFor("idle", async () => {
      x = await node.status();
      return x.queued === 0 && x.draining === false && x.release.leases === 0;
    }, 5000).catch(() => assert.fail(`still not idle after a fresh cycle: ${JSON.stringify(x)}`));
  });
});
