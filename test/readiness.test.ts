// Release into a backend that is ready (issue 10): a released request whose upstream
// connection failed is held again at the head of the queue and retried (the app never
// saw it, so POSTs too); gateway failures stop the release for a back-off; slow start.
import { describe, it, before, after, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";
import { PendingRequest, get, send, waitFor } from "./harness/http.ts";
import { ids } from "./harness/held.ts";
import { APP_CONF, PROXY_APP as APP, STOP_PROXY_APP, RETRY_ON_ERROR, retryLocation } from "./harness/nginx-config.ts";


const FLAKY = `
        location /app/ {
            access_by_lua_block        { require("intermission").access() }
            header_filter_by_lua_block { require("intermission").header_filter() }
            log_by_lua_block           { require("intermission").log() }
            proxy_pass http://127.0.0.1:8082/;${RETRY_ON_ERROR}
        }${retryLocation()}`;

async function holdAll(node: NginxNode, requests: { path: string; post?: string }[]): Promise<PendingRequest[]> {
  const pending: PendingRequest[] = [];
  for (const [i, r] of requests.entries()) {
    pending.push(send(node.url(r.path), r.post === undefined ? {} : { method: "POST", body: r.post, headers: { "Content-Type": "text/plain" } }));
    await node.held(i + 1);
  }
  return pending;
}

describe("release into a backend that is not ready yet", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({
      setup: { release_window: 4, max_hold: 20 },
      extraLocations: FLAKY,
      files: [{ content: APP, target: APP_CONF }],
    });
  });
  after(async () => node?.stop());
  beforeEach(async () => {
    await node.reset();
    await node.exec(STOP_PROXY_APP);
  });
  afterEach(async () => node.assertCleanLog([/connect\(\) failed \(111: Connection refused\) while connecting to upstream/]));

  it("requests released into a port nobody listens on yet are retried, none fails, each reaches the app once", async () => {
    await node.control("pause");
    const requests = ids("r", 12).map((id, i) => (i % 3 === 0 ? { path: `/app/?id=${id}`, post: `body of ${id}` } : { path: `/app/?id=${id}` }));
    const pending = await holdAll(node, requests);
    await node.control("resume");
    // The app comes up a moment after the resume (a maintenance script that returned early).
    await waitFor("a failed attempt to be retried", async () => (await node.status()).counters.retried > 0);
    await node.exec(["nginx", "-c", APP_CONF]);
    const replies = await Promise.all(pending.map((p) => p.reply));
    assert.deepEqual(replies.map((r) => r.status), requests.map(() => 200), "zero failed requests");
    const seen = (await node.arrivals()).ids;
    assert.deepEqual([...seen].sort(), ids("r", 12).sort(), "each request reached the app exactly once");
    const status = await node.status();
    assert.ok(status.counters.retried >= 1);
    assert.equal(status.held, 0);
    assert.equal(status.release.leases, 0);
    await waitFor("nothing in flight", async () => (await node.status()).in_flight === 0);
  });

  it("an app that answers 503 for a second costs a few requests, not the backlog", async () => {
    await node.exec(["nginx", "-c", APP_CONF]);
    await node.control("pause");
    const pending = await holdAll(node, ids("/?id=c", 20).map((path) => ({ path })));
    await get(`${node.backend}/_backend/fail?seconds=1`);
    await node.control("resume");
    const replies = await Promise.all(pending.map((p) => p.reply));
    const failed = replies.filter((r) => r.status !== 200);
    assert.ok(failed.every((r) => r.status === 503));
    assert.ok(failed.length >= 1 && failed.length <= 5, `a probe per back-off step failed, the rest waited: ${failed.length} failed`);
    assert.equal((await node.arrivals()).ids.length, 20 - failed.length);
  });
});

describe("ready_probe: the release waits until the backend answers", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({
      setup: { release_window: 4, max_hold: 8, ready_probe: { url: "http://127.0.0.1:8082/up", successes: 2, interval: 0.1, timeout: 3 } },
      extraLocations: FLAKY,
      files: [{ content: APP, target: APP_CONF }],
    });
  });
  after(async () => node?.stop());
  beforeEach(async () => {
    await node.reset();
    await node.exec(STOP_PROXY_APP);
  });
  afterEach(async () => node.assertCleanLog([/connect\(\) failed \(111: Connection refused\) while connecting to upstream/]));

  it("holds after the resume until the probe passes, then releases without a failed attempt", async () => {
    await node.control("pause");
    const pending = await holdAll(node, ids("/app/?id=p", 6).map((path) => ({ path })));
    const before = (await node.status()).counters;
    await node.control("resume");
    const waiting = await node.status();
    assert.equal(waiting.waiting_ready, true);
    assert.equal(waiting.held, 6, "still held while the backend is down");
    await waitFor("a failed probe", async () => (await node.status()).counters.probe_failures > before.probe_failures);
    await node.exec(["nginx", "-c", APP_CONF]);
    for (const p of pending) assert.equal((await p.reply).status, 200);
    const after = await node.status();
    assert.equal(after.waiting_ready, false);
    assert.equal(after.counters.retried, before.retried, "no request was sent before the backend was ready");
    assert.ok(after.ready_wait_seconds > 0);
    assert.match(await node.errorLog(), /ready probe http:\/\/127.0.0.1:8082\/up for scope default passed 2x/);
  });

  it("releases anyway when the probe times out, and says so", async () => {
    await node.control("pause");
    const [p] = await holdAll(node, [{ path: "/?id=t1" }]);
    await node.control("resume");
    const reply = await p.reply;
    assert.equal(reply.status, 200, "the main backend answers; only the probe's URL is down");
    assert.ok(reply.ms >= 2500, `held until the probe's timeout (3 s), took ${Math.round(reply.ms)} ms`);
    assert.match(await node.errorLog(), /ready probe .* timed out after 3s .*releasing the held requests anyway/);
  });
});
