// Breaker: released requests killed by worker_shutdown_timeout; a pause during the ready_probe wait.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";
import { waitFor } from "./harness/http.ts";
import { ids, sleep, holdInOrder, assertIdle } from "./harness/held.ts";
import { APP_CONF, PROXY_APP as APP } from "./harness/nginx-config.ts";

describe("break: reload with worker_shutdown_timeout kills released requests mid-drain", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ workers: 2, mainDirectives: "worker_shutdown_timeout 1s;", setup: { release_window: 2, max_hold: 10, release_lease: 30 } });
  });
  after(async () => node?.stop());
  // The test's backend runs in the same nginx, so the shutdown timeout cuts it too: when the
  // old worker serving k1's backend side goes first, the front logs that its upstream closed.
  afterEach(async () => node.assertCleanLog([/upstream prematurely closed connection while reading response header from upstream/]));

  it("the rest of the backlog still drains (the killed requests' slots come back), idle after", async () => {
    // README: a window slot "comes back at the end of the request or after release_lease";
    // "With worker_shutdown_timeout, the requests an old worker still holds when it runs out
    // are cut off by nginx; their log() gives their places back"; "nginx -s reload during a
    // pause loses nothing". release_lease (30 s) outlasts max_hold (10 s) here, so the rest
    // drains only if the cut request's own end (its log()) gives its slot back.
    await node.control("pause", "ttl=0");
    const killed = await holdInOrder(node, ids("k", 2).map((id) => `/?id=${id}&delay=8`));
    const cut = Promise.allSettled(killed.map((p) => p.reply));
    await node.control("resume");
    // Slow start: k1 takes the window's one slot; k2 waits behind it in the backlog.
    await waitFor("k1 at the backend", async () => (await node.arrivals()).ids.includes("k1"));
    await node.control("pause", "ttl=0");
    await node.reload();
    await waitFor("the old workers cut k1 (released) and k2 (held) and exit", async () => (await node.shuttingDownWorkers()) === 0, 8000);
    // Cut: the connection closed, or (k1) a 502 when its backend side was cut first.
    const fates = (await cut).map((s) => (s.status === "rejected" ? "cut" : s.value.status === 502 ? "cut" : String(s.value.status)));
    assert.deepEqual(fates, ["cut", "cut"], "k1 and k2 cut by the shutdown timeout");
    // The rest of the backlog, held by the new workers: it drains only if k1's slot and
    // k2's ticket came back when their worker cut them.
    const rest = await holdInOrder(node, ids("n", 6).map((id) => `/?id=${id}`));
    await node.control("resume");
    const replies = await Promise.all(rest.map((p) => p.reply));
    const summary = replies.map((r, i) => `n${i + 1}:${r.status}@${Math.round(r.ms)}ms`).join(" ");
    assert.deepEqual(replies.map((r) => r.status), replies.map(() => 200), summary);
    assert.ok(replies.every((r) => r.ms < 5000), `drained at once after the resume, not at max_hold (10 s): ${summary}`);
    const arr = (await node.arrivals()).ids;
    // (window 2: two granted at once may reach the upstream in either order)
    assert.deepEqual([arr[0], ...arr.slice(1).sort()], ["k1", ...ids("n", 6)], "k1 once, then the rest, each once (k2 never sent)");
    await assertIdle(node);
  });
});


describe("break: a pause during the ready_probe wait", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({
      workers: 2,
      setup: { release_window: 4, max_hold: 20, on_timeout: "reject", ready_probe: { url: "http://127.0.0.1:8082/up", successes: 1, interval: 0.1, timeout: 15 } },
      files: [{ content: APP, target: APP_CONF }],
    });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("the probe passing while paused again forwards nothing; the next resume releases all once", async () => {
    // INTERFACE: pause = "hold new requests"; README: "Paused, each request takes a ticket ... and sleeps".
    // A probe that passes after a second pause must not release the backlog into a paused site.
    await node.control("pause", "ttl=0");
    const pending = await holdInOrder(node, ids("/?id=q", 4));
    await node.control("resume");
    assert.equal((await node.status()).waiting_ready, true);
    await node.control("pause", "ttl=0");
    const late = node.send("/?id=late");
    await node.exec(["nginx", "-c", APP_CONF]);
    await sleep(1500);
    const during = (await node.arrivals()).ids.filter((i) => i !== "-");
    assert.deepEqual(during, [], `forwarded while paused: ${during}`);
    await node.control("resume");
    const replies = await Promise.all([...pending, late].map((p) => p.reply));
    assert.deepEqual(replies.map((r) => r.status), [200, 200, 200, 200, 200]);
    const arr = (await node.arrivals()).ids.filter((i) => i !== "-");
    assert.deepEqual([...arr].sort(), ["late", "q1", "q2", "q3", "q4"]);
    await assertIdle(node);
  });
});
