// Fleet mode: three nginx nodes and Redis on a network of their own. One switch for the
// whole fleet, instant propagation, TTL in Redis, and Redis failures that lose nothing.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import type { StartedNetwork, StartedTestContainer } from "testcontainers";
import { NginxNode, startRedis, newNetwork, DOCKER_DNS } from "./harness/node.ts";
import { waitFor } from "./harness/http.ts";

const FLEET_SETUP = { store: "redis", redis: { host: "redis", port: 6379, prefix: "test", connect_timeout: 0.2 }, max_hold: 20 };
const REDIS_DOWN = [/intermission: fleet: /, /not applied: /];

function startNode(network: StartedNetwork): Promise<NginxNode> {
  return NginxNode.start({ setup: FLEET_SETUP, network, resolver: DOCKER_DNS });
}

describe("fleet mode on Redis", () => {
  let network: StartedNetwork;
  let redis: StartedTestContainer;
  let nodes: NginxNode[] = [];
  const [a, b, c] = [0, 1, 2].map((i) => () => nodes[i]);

  before(async () => {
    network = await newNetwork();
    redis = await startRedis(network);
    nodes = await Promise.all([startNode(network), startNode(network), startNode(network)]);
  });
  after(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    await redis?.stop();
    await network?.stop();
  });
  afterEach(async () => {
    for (const n of nodes) await n.assertCleanLog(REDIS_DOWN);
  });

  it("a pause via A holds on B and C; a resume via C releases all three", async () => {
    for (let round = 1; round <= 2; round++) {
      const paused = await a().control("pause", `reason=fleet${round}`);
      assert.equal(paused.status, 200, paused.body);
      // Propagation: the others hold new requests right away.
      for (const n of [b(), c()]) {
        await waitFor("the pause to propagate", async () => (await n.status()).state === "paused", 1000);
      }
      const held = nodes.map((n, i) => n.send(`/?id=f${round}n${i}`));
      for (const n of nodes) await n.held(1);
      const status = await b().status();
      assert.equal(status.reason, `fleet${round}`);
      await waitFor("heartbeats to count the fleet", async () => {
        const f = (await a().status()).fleet;
        return f.node_count === 3 && f.held === 3;
      });
      const resumed = await c().control("resume");
      assert.equal(resumed.status, 200, resumed.body);
      for (const p of held) assert.equal((await p.reply).status, 200);
      for (const n of nodes) {
        await waitFor("running everywhere", async () => (await n.status()).state === "running");
      }
    }
  });

  it("a pause's TTL lives in Redis and resumes the whole fleet", async () => {
    await b().control("pause", "ttl=1&reason=ttl");
    await waitFor("paused on C", async () => (await c().status()).state === "paused", 1000);
    const held = c().send("/?id=ttl");
    await c().held(1);
    const reply = await held.reply;
    assert.equal(reply.status, 200);
    assert.ok(reply.ms < 5000, `released by the TTL after ${reply.ms} ms`);
    for (const n of nodes) await waitFor("running again", async () => (await n.status()).state === "running");
  });

  it("a node started mid-pause holds from its first request", async () => {
    await a().control("pause", "reason=newcomer");
    const d = await startNode(network);
    try {
      const first = d.send("/?id=first");
      await d.held(1);
      assert.deepEqual((await d.arrivals()).ids, [], "its first request did not pass");
      await a().control("resume");
      assert.equal((await first.reply).status, 200);
      await d.assertCleanLog();
    } finally {
      await d.stop();
    }
  });

  it("Redis lost mid-pause: held requests keep their place; Redis back: the fleet re-syncs", async () => {
    await a().control("pause", "reason=redis-outage&ttl=120");
    await waitFor("paused on B", async () => (await b().status()).state === "paused", 1000);
    const held = b().send("/?id=outage");
    await b().held(1);
    await redis.stop();

    // The switch cannot be thrown without Redis: 503 with a JSON error, nothing changes.
    const refused = await c().control("resume");
    assert.equal(refused.status, 503, refused.body);
    assert.match(refused.json().error, /Redis is unavailable/);
    assert.equal((await b().status()).state, "paused");
    assert.equal((await b().status()).held, 1, "the held request keeps its place");

    // A fresh, empty Redis (no persistence): the fleet's state is "running" now.
    redis = await startRedis(network);
    assert.equal((await held.reply).status, 200);
    for (const n of nodes) await waitFor("re-synced", async () => (await n.status()).state === "running", 10_000);
    const again = await a().control("pause", "reason=after-outage");
    assert.equal(again.status, 200, again.body);
    await waitFor("paused on C again", async () => (await c().status()).state === "paused", 1000);
    await c().control("resume");
  });
});

describe("fleet mode with Redis unreachable from the start", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({
      setup: { store: "redis", redis: { host: "127.0.0.1", port: 1, connect_timeout: 0.1 } },
    });
  });
  after(async () => node?.stop());

  it("traffic flows with no added latency and the control API answers 503", async () => {
    for (let i = 0; i < 20; i++) {
      const r = await node.get(`/?id=r${i}`);
      assert.equal(r.status, 200);
      assert.ok(r.ms < 500, `request ${i} took ${r.ms} ms`);
    }
    for (const action of ["pause", "resume"]) {
      const r = await node.control(action);
      assert.equal(r.status, 503, r.body);
      assert.match(r.json().error, /Redis is unavailable/);
    }
    const status = await node.status();
    assert.equal(status.state, "running");
    assert.match(status.redis_error, /connection refused/);
    await node.assertCleanLog([...REDIS_DOWN]);
  });
});
