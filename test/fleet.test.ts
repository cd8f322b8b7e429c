// Fleet mode: three nginx nodes and Redis on a network of their own. One switch for the
// whole fleet, instant propagation, TTL in Redis, and Redis failures that lose nothing.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import type { StartedNetwork, StartedTestContainer } from "testcontainers";
import { NginxNode, startRedis, newNetwork, DOCKER_DNS } from "./harness/node.ts";
import { waitFor } from "./harness/http.ts";

const FLEET_SETUP = { store: "redis", redis: { host: "redis", port: 6379, prefix: "test", connect_timeout: 0.2 }, max_hold: 20 };
/**
 * The error lines that losing Redis provokes, whitelisted only in the tests that take it
 * away: the sync loop's outage line (once per outage) and a switch refused meanwhile.
 * Anything else under "intermission: fleet:" (such as "cannot start the sync loop") is a
 * failure everywhere.
 */
const REDIS_LOST = [
  /intermission: fleet: [^;]*; keeping the last known state and retrying/,
  /intermission: (pause|resume) of scope default not applied: /,
];
/**
 * The README's catch-up bounds: a node that missed a change with its connection up finds
 * it at its next check (every 5 s x 0.8-1.2 while running); one that lost Redis
 * resubscribes within its back-off (at most 2 s x 1.2) of Redis answering again.
 */
const CATCH_UP_CHECK_MS = 6000;
const CATCH_UP_RECONNECT_MS = 2400;
/** Slack for a loaded test machine (container exec, the harness's own polling). */
const SLACK_MS = 1500;

/** redis-cli in the Redis container. */
async function redisCli(redis: StartedTestContainer, ...args: string[]): Promise<string> {
  const r = await redis.exec(["redis-cli", ...args]);
  assert.equal(r.exitCode, 0, r.output);
  return r.output.trim();
}

/**
 * Writes a pause into Redis as a node of this version would, but with the writer's clock
 * `skew` seconds off (since/until), and optionally without publishing it (a lost message).
 */
async function writePause(redis: StartedTestContainer, o: { ttl: number; reason: string; skew: number; publish: boolean }) {
  const now = Date.now() / 1000 + o.skew;
  const rec = { mode: "paused", since: now, until: now + o.ttl, ttl: o.ttl, reason: o.reason };
  await redisCli(redis, "SET", "test:scope:default", JSON.stringify(rec), "PX", String(o.ttl * 1000));
  await redisCli(redis, "SADD", "test:scopes", "default");
  const version = Number(await redisCli(redis, "INCR", "test:version"));
  if (o.publish) await redisCli(redis, "PUBLISH", "test:events", `default\n${JSON.stringify({ ...rec, version })}`);
}

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
  /** Set by a test that takes Redis away: the lines that provokes (REDIS_LOST). */
  let provoked: RegExp[] = [];
  afterEach(async () => {
    const expected = provoked;
    provoked = [];
    for (const n of nodes) await n.assertCleanLog(expected);
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

  it("changes go to Redis as EVALSHA, and the script text only after Redis forgot it", async () => {
    const calls = async (cmd: string) =>
      Number((await redisCli(redis, "INFO", "commandstats")).match(new RegExp(`^cmdstat_${cmd}:calls=(\\d+)`, "m"))?.[1] ?? 0);
    await redisCli(redis, "CONFIG", "RESETSTAT");
    for (let i = 0; i < 3; i++) {
      assert.equal((await a().control("pause", "reason=sha")).status, 200);
      assert.equal((await a().control("resume")).status, 200);
    }
    assert.ok((await calls("evalsha")) >= 6, "every change is an EVALSHA");
    assert.equal(await calls("eval"), 0, "no script text was sent");
    await redisCli(redis, "SCRIPT", "FLUSH");
    assert.equal((await b().control("pause", "reason=after-flush")).status, 200);
    const afterFlush = await calls("eval");
    assert.ok(afterFlush >= 1, "NOSCRIPT: the text once");
    await waitFor("paused on C", async () => (await c().status()).state === "paused", 1000);
    assert.equal((await b().control("resume")).status, 200);
    assert.equal(await calls("eval"), afterFlush, "then the SHA again");
    for (const n of nodes) await waitFor("running", async () => (await n.status()).state === "running", 1000);
  });

  it("pause?drain= waits for requests in flight on the other nodes, however old their last heartbeat", async () => {
    // B's request starts after B's last heartbeat (which said 0 in flight): the drain must
    // wait for B's word after the pause, not trust what B said before it.
    const slow = b().send("/?id=slow-on-b&delay=2");
    await waitFor("the slow request at B's upstream", async () => (await b().arrivals()).active === 1);
    const t0 = Date.now();
    const r = await a().control("pause", "drain=10&reason=drain");
    assert.equal(r.status, 200, r.body);
    assert.equal(r.json().drained, true, r.body);
    assert.ok(Date.now() - t0 >= 1000, `the drain waited for B's request (${Date.now() - t0} ms)`);
    assert.equal((await slow.reply).status, 200);
    await a().control("resume");
    for (const n of nodes) await waitFor("running", async () => (await n.status()).state === "running", 1000);
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

  it("a node whose clock runs ahead of the pausing node's holds for the whole TTL", async () => {
    // As if the node that paused had a clock an hour slow: its since and until are an hour
    // in the past by ours. Only the TTL in seconds may decide the deadline.
    await writePause(redis, { ttl: 60, reason: "skewed", skew: -3600, publish: true });
    for (const n of nodes) {
      await waitFor("the skewed pause to hold", async () => (await n.status()).state === "paused", 2000);
    }
    const held = b().send("/?id=skew");
    await b().held(1);
    const status = await b().status();
    const left = status.until - Date.now() / 1000;
    assert.ok(left > 50 && left <= 61, `B's own deadline is 60 s from now, not the sender's: ${left}`);
    // A node that starts now reads the record's remaining TTL from Redis, not its until.
    const d = await startNode(network);
    try {
      await waitFor("the newcomer holding", async () => (await d.status()).state === "paused", 5000);
      const dLeft = (await d.status()).until - Date.now() / 1000;
      assert.ok(dLeft > 45 && dLeft <= 61, `the newcomer's deadline: ${dLeft}`);
      await d.assertCleanLog();
    } finally {
      await d.stop();
    }
    await a().control("resume");
    assert.equal((await held.reply).status, 200);
  });

  it("refuses a ttl under a millisecond with 400, not a Redis error", async () => {
    for (const ttl of ["0.0005", "0.0001"]) {
      const r = await a().control("pause", `ttl=${ttl}`);
      assert.equal(r.status, 400, r.body);
      assert.equal(r.json().field, "ttl");
    }
    for (const n of nodes) assert.equal((await n.status()).state, "running");
  });

  it("a change whose message was lost reaches every node at its next check", async () => {
    await writePause(redis, { ttl: 60, reason: "lost-message", skew: 0, publish: false });
    const t0 = Date.now();
    for (const n of nodes) {
      await waitFor("the unpublished pause", async () => (await n.status()).state === "paused", CATCH_UP_CHECK_MS + SLACK_MS);
    }
    const caughtUp = Date.now() - t0;
    const held = c().send("/?id=lost");
    await c().held(1);
    // And a resume whose message is lost: the key goes, the counter moves, nothing is published.
    await redisCli(redis, "DEL", "test:scope:default");
    await redisCli(redis, "INCR", "test:version");
    const t1 = Date.now();
    assert.equal((await held.reply).status, 200);
    for (const n of nodes) {
      await waitFor("the unpublished resume", async () => (await n.status()).state === "running", CATCH_UP_CHECK_MS + SLACK_MS);
    }
    assert.ok(caughtUp <= CATCH_UP_CHECK_MS + SLACK_MS && Date.now() - t1 <= CATCH_UP_CHECK_MS + SLACK_MS);
  });

  it("a pause made while a node is reconnecting after a Redis restart reaches it when it resubscribes", async () => {
    provoked = REDIS_LOST;
    await redis.stop();
    // Long enough for the nodes' back-off to reach its ceiling.
    await new Promise((r) => setTimeout(r, 5000));
    redis = await startRedis(network);
    // The first pause Redis takes, before the others have resubscribed.
    await waitFor("a pause accepted", async () => (await a().control("pause", "reason=after-restart")).status === 200, 5000);
    const t0 = Date.now();
    for (const n of nodes) {
      await waitFor("the pause after the restart", async () => (await n.status()).state === "paused",
        CATCH_UP_RECONNECT_MS + SLACK_MS);
    }
    assert.ok(Date.now() - t0 <= CATCH_UP_RECONNECT_MS + SLACK_MS);
    await b().control("resume");
    for (const n of nodes) await waitFor("running", async () => (await n.status()).state === "running", 1000);
  });

  it("Redis lost mid-pause: held requests keep their place; Redis back: the fleet re-syncs", async () => {
    provoked = REDIS_LOST;
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
    await node.assertCleanLog(REDIS_LOST);
  });
});

describe("fleet_release_window: the fleet's window, shared by its live nodes", () => {
  let network: StartedNetwork;
  let redis: StartedTestContainer;
  let nodes: NginxNode[] = [];
  before(async () => {
    network = await newNetwork();
    redis = await startRedis(network);
    const setup = { ...FLEET_SETUP, redis: { ...FLEET_SETUP.redis, prefix: "share" }, release_window: 64, fleet_release_window: 6 };
    nodes = await Promise.all([0, 1, 2].map(() => NginxNode.start({ setup, network, resolver: DOCKER_DNS })));
  });
  after(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    await redis?.stop();
    await network?.stop();
  });
  afterEach(async () => {
    for (const n of nodes) await n.assertCleanLog();
  });

  it("three nodes with a fleet window of 6 release at most 2 at a time each, 6 in all", async () => {
    await waitFor("three nodes in the heartbeats", async () => (await nodes[0].status()).fleet?.node_count === 3);
    assert.equal((await nodes[0].control("pause")).status, 200);
    await Promise.all(nodes.map((n) => waitFor("paused everywhere", async () => (await n.status()).state === "paused")));
    const pending = nodes.flatMap((n, i) => Array.from({ length: 8 }, (_, k) => n.send(`/?id=n${i}-${k}&delay=0.3`)));
    await Promise.all(nodes.map((n) => n.held(8)));
    assert.equal((await nodes[0].control("resume")).status, 200);
    for (const p of pending) assert.equal((await p.reply).status, 200);
    const peaks = await Promise.all(nodes.map(async (n) => Math.max(...(await n.arrivals()).concurrency)));
    assert.ok(peaks.every((p) => p <= 2), `each node's share is 6 / 3 = 2: ${peaks}`);
    assert.ok(peaks.reduce((a, b) => a + b, 0) <= 6, `at most 6 in flight across the fleet: ${peaks}`);
    assert.ok(peaks.some((p) => p === 2), `the share fills (slow start doubles 1 to 2): ${peaks}`);
  });
});
