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
    node = await NginxNode.start({ workers: 2, mainDirectives: "worker_shutdown_timeout 1s;", setup: { release_window: 2, max_hold: 30, release_lease: 2 } });
  });
  after(async () => node?.stop());
  // The test's backend runs in the same nginx, so the shutdown timeout cuts it too: when the
  // old worker serving k1's backend side goes first, the front logs that its upstream closed.
  afterEach(async () => node.assertCleanLog([/upstream prematurely closed connection while reading response header from upstream/]));

  it("the rest of the backlog still drains (the killed requests' slots come back), idle after", async () => {
    // README: "A window slot is a lease: it comes back ... after release_lease seconds";
    // "nginx -s reload during a pause loses nothing".
    await node.control("pause", "ttl=0");
    const pending = await holdInOrder(node, [
      ...ids("k", 2).map((id) => `/?id=${id}&delay=8`),
      ...ids("n", 6).map((id) => `/?id=${id}`),
    ]);
    for (const p of pending) p.reply.catch(() => undefined);
    await node.control("resume");
    await waitFor("k1 at the backend", async () => (await node.arrivals()).ids.includes("k1"));
    await node.reload();
    const settled = await Promise.allSettled(pending.map((p) => p.reply));
    const rest = settled.slice(2);
    // held requests in old workers may be cut by the shutdown timeout too; those that answered must be 200
    for (const s of rest) if (s.status === "fulfilled") assert.equal(s.value.status, 200);
    const arr = (await node.arrivals()).ids;
    assert.equal(new Set(arr).size, arr.length, `none twice: ${arr}`);
    await assertIdle(node, "default", 8000);
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
