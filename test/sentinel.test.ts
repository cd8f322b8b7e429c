// Fleet mode through Redis Sentinel: the nodes find the master through a sentinel, and
// after the master dies and the sentinel promotes the replica they follow it, with the
// pause intact.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { GenericContainer, StartedNetwork, StartedTestContainer, Wait } from "testcontainers";
import { NginxNode, newNetwork, DOCKER_DNS, ensureImages } from "./harness/node.ts";
import { waitFor } from "./harness/http.ts";

const REDIS = ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"];
const SENTINEL_CONF = [
  "port 26379", "sentinel resolve-hostnames yes", "sentinel announce-hostnames yes",
  "sentinel monitor mymaster redis-master 6379 1", "sentinel down-after-milliseconds mymaster 1000",
  "sentinel failover-timeout mymaster 5000", "protected-mode no",
].join("\\n");

function redisContainer(network: StartedNetwork, alias: string, command: string[]) {
  return new GenericContainer("intermission-redis:latest").withNetwork(network).withNetworkAliases(alias)
    .withCommand(command).withWaitStrategy(Wait.forLogMessage(/Ready to accept connections|Sentinel ID is/)).start();
}

async function cli(c: StartedTestContainer, ...args: string[]): Promise<string> {
  return (await c.exec(["redis-cli", ...args])).output.trim();
}

describe("fleet mode through Redis Sentinel", () => {
  let network: StartedNetwork;
  let master: StartedTestContainer;
  let replica: StartedTestContainer;
  let sentinel: StartedTestContainer;
  let nodes: NginxNode[] = [];

  before(async () => {
    ensureImages();
    network = await newNetwork();
    master = await redisContainer(network, "redis-master", REDIS);
    replica = await redisContainer(network, "redis-replica",
      [...REDIS, "--replicaof", "redis-master", "6379", "--replica-announce-ip", "redis-replica"]);
    sentinel = await redisContainer(network, "sentinel",
      ["sh", "-c", `printf '${SENTINEL_CONF}\\n' > /tmp/s.conf && exec redis-server /tmp/s.conf --sentinel`]);
    await waitFor("the replica in sync", async () => /master_link_status:up/.test(await cli(replica, "info", "replication")));
    await waitFor("the sentinel to know the replica", async () =>
      /redis-replica/.test(await cli(sentinel, "-p", "26379", "sentinel", "replicas", "mymaster")), 20_000);
    const setup = {
      store: "redis", max_hold: 30,
      redis: { sentinels: [{ host: "sentinel", port: 26379 }], master_name: "mymaster", prefix: "s", connect_timeout: 0.5 },
    };
    nodes = await Promise.all([0, 1].map(() => NginxNode.start({ setup, network, resolver: DOCKER_DNS })));
  });
  after(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    for (const c of [sentinel, replica, master]) await c?.stop().catch(() => undefined);
    await network?.stop();
  });

  it("pauses through the sentinel's master, survives a failover, and resumes", async () => {
    const [a, b] = nodes;
    const paused = await a.control("pause", "reason=sentinel&ttl=120");
    assert.equal(paused.status, 200, paused.body);
    await waitFor("B paused", async () => (await b.status()).state === "paused", 2000);
    const held = [a.send("/?id=sa"), b.send("/?id=sb")];
    await a.held(1);
    await b.held(1);
    await waitFor("the pause replicated", async () => (await cli(replica, "get", "s:scope:default")).includes("paused"));

    await master.stop();
    // Until the sentinel promotes the replica, the switch cannot be thrown (503); then it can.
    const resumed = await waitFor("a resume through the new master", async () => {
      const r = await b.control("resume");
      return r.status === 200 ? r : undefined;
    }, 30_000);
    assert.equal(resumed.json().previous, "paused", "the pause survived the failover");
    for (const p of held) assert.equal((await p.reply).status, 200);
    await waitFor("A running", async () => (await a.status()).state === "running", 5000);
    assert.match(await cli(sentinel, "-p", "26379", "sentinel", "get-master-addr-by-name", "mymaster"), /redis-replica/);
    for (const n of nodes) await n.assertCleanLog([/intermission: fleet: /, /not applied: /]);
  });
});
