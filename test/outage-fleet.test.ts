// Unplanned outages in fleet mode: "each node detects and holds on its own" (issue 22).
// Two nodes share one switch through Redis; each has its own application on its own
// loopback. Node A's application goes away: A holds its requests in state `outage`,
// while B, whose application runs, serves as usual and Redis never hears of the outage
// (a node-local state written to the fleet's switch would pause the whole fleet). An
// operator's fleet-wide pause during A's outage turns it into the fleet's pause on A too,
// and the fleet's resume releases A's held requests once A's application is back.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import type { StartedNetwork, StartedTestContainer } from "testcontainers";
import { NginxNode, startRedis, newNetwork, DOCKER_DNS } from "./harness/node.ts";
import { PendingRequest, waitFor } from "./harness/http.ts";
import { TestApp } from "./harness/app.ts";
import { RETRY_ON_ERROR, retryLocation, serverHooks } from "./harness/nginx-config.ts";

const OUTAGE_HOLD = 8;
const SETUP = {
  store: "redis",
  redis: { host: "redis", port: 6379, prefix: "ofleet", connect_timeout: 0.2 },
  max_hold: 20,
  outage_hold: OUTAGE_HOLD,
};

/** Each node's own application: answers its id. */
const app = new TestApp({
  name: "fleetapp",
  listen: "127.0.0.1:8082",
  dict: "fleetapp 1m",
  server: `
        location / { content_by_lua_block { ngx.say("app ", ngx.var.arg_id or "-") } }`,
});

/** The README's wiring: hooks at server level, the retry location. */
const LOCATIONS = `
        location /app/ {
            set $intermission_scope app;
            access_by_lua_block { require("intermission").access() }
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://127.0.0.1:8082;${RETRY_ON_ERROR}
        }${retryLocation()}`;

/** nginx's own line for a request's connect that the stopped application refused. */
const REQUEST_CONNECT = /\[error\].*connect\(\) failed \(111: Connection refused\) while connecting to upstream/;

async function redisCli(redis: StartedTestContainer, ...args: string[]): Promise<string> {
  const r = await redis.exec(["redis-cli", ...args]);
  assert.equal(r.exitCode, 0, r.output);
  return r.output.trim();
}

describe("unplanned outages in fleet mode: each node detects and holds on its own", () => {
  let network: StartedNetwork;
  let redis: StartedTestContainer;
  let a: NginxNode;
  let b: NginxNode;

  before(async () => {
    network = await newNetwork();
    redis = await startRedis(network);
    const start = () => NginxNode.start({
      workers: 2, setup: SETUP, network, resolver: DOCKER_DNS,
      files: [app.file()], serverDirectives: serverHooks(), extraLocations: LOCATIONS,
    });
    [a, b] = await Promise.all([start(), start()]);
    await Promise.all([app.start(a), new TestApp(app.spec).start(b)]);
  });
  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
    await network?.stop();
  });
  afterEach(async () => {
    await app.start(a).catch(() => undefined);
    await waitFor("A's outage over", async () => (await a.status("app")).state === "running");
    await a.assertCleanLog([REQUEST_CONNECT]);
    await b.assertCleanLog();
  });

  it("A's application down: A holds (state outage), B serves, Redis knows nothing of it; A's application back: A's held requests answered 200", async () => {
    await app.stop(a);
    const held: PendingRequest[] = [];
    for (let i = 0; i < 4; i++) held.push(a.send(`/app/x?id=a${i}`));
    await waitFor("A in outage with 4 held", async () => {
      const s = await a.status("app");
      return s.state === "outage" && s.held === 4;
    });
    // B runs: its own application answers, nothing held there.
    const rb = await b.get("/app/x?id=b1");
    assert.equal(rb.status, 200, rb.body);
    assert.equal(rb.body.trim(), "app b1");
    const sb = await b.status("app");
    assert.equal(sb.state, "running", JSON.stringify(sb));
    assert.equal(sb.held, 0);
    // The fleet's switch is untouched: no scope record for app says anything but running.
    const rec = await redisCli(redis, "GET", "ofleet:scope:app");
    assert.ok(rec === "" || !/"mode":"(outage|paused|maintenance)"/.test(rec), `Redis holds ${rec}`);
    await app.start(a);
    const replies = await Promise.all(held.map((p) => p.reply));
    assert.deepEqual(replies.map((r) => r.status), [200, 200, 200, 200], replies.map((r) => r.body).join("|"));
    assert.deepEqual(replies.map((r) => r.body.trim()), ["app a0", "app a1", "app a2", "app a3"]);
  });

  it("a fleet-wide pause during A's outage holds on both; the fleet's resume releases A's held requests once its application is back", async () => {
    await app.stop(a);
    const first = a.send("/app/x?id=o1");
    await waitFor("A in outage", async () => (await a.status("app")).state === "outage");
    // The operator pauses the whole fleet through B.
    const p = await b.control("pause", "scope=app&ttl=0");
    assert.equal(p.status, 200, p.body);
    await waitFor("A paused by the fleet", async () => (await a.status("app")).state === "paused");
    const onB = b.send("/app/x?id=b2");
    const onA = a.send("/app/x?id=o2");
    await b.held(1, "app");
    await a.held(2, "app");
    await app.start(a);
    const r = await b.control("resume", "scope=app");
    assert.equal(r.status, 200, r.body);
    const replies = await Promise.all([first.reply, onA.reply, onB.reply]);
    assert.deepEqual(replies.map((x) => x.status), [200, 200, 200], replies.map((x) => x.body).join("|"));
    assert.deepEqual(replies.map((x) => x.body.trim()), ["app o1", "app o2", "app b2"]);
    for (const n of [a, b]) assert.equal((await n.status("app")).state, "running");
  });
});
