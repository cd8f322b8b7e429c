// The state zone's bound (issue 19, item 10): max_scopes scopes with the longest names and
// reasons fit the shipped zone with room to spare (no "no memory" 409 before the bound),
// and setup() refuses a max_scopes that the zone could not hold.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";
import { nginxConfig, SCOPED_LOCATION } from "./harness/nginx-config.ts";
import { assertIdle } from "./harness/held.ts";

/** 64 characters, all valid in a scope name, unique per i. */
const scopeName = (i: number) => `scope.${String(i).padStart(6, "0")}:`.padEnd(64, "x-_");
const REASON = "r".repeat(500);
const MAX_SCOPES = 1000; // the default

describe("the shipped state zone holds max_scopes scopes at their largest", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({
      workers: 2,
      extraLocations: SCOPED_LOCATION,
    });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("1,000 scopes of 64-character names with 500-byte reasons: no 409 before the bound, room left, nothing lost", { timeout: 300_000 }, async () => {
    assert.equal(scopeName(1).length, 64);
    const start = (await node.status()).shared_dict.state;
    // Half in maintenance, half paused: every scope keeps its mode and reason.
    for (let i = 0; i < MAX_SCOPES; i += 10) {
      const batch = Array.from({ length: 10 }, (_, j) => i + j).map(async (k) => {
        const action = k % 2 === 0 ? "maintenance" : "pause";
        const r = await node.control(action, `scope=${scopeName(k)}&ttl=0&reason=${REASON}`);
        assert.equal(r.status, 200, `scope ${k}: ${r.body}`);
      });
      await Promise.all(batch);
    }
    const refused = await node.control("pause", `scope=${scopeName(MAX_SCOPES)}&ttl=0`);
    assert.equal(refused.status, 409, refused.body);
    assert.match(refused.json().error, /max_scopes = 1000/);

    const full = (await node.status(scopeName(0))).shared_dict.state;
    const usedKib = start.free_kib - full.free_kib;
    console.log(`# state zone: ${full.capacity_kib} KiB, ${usedKib} KiB for ${MAX_SCOPES} scopes (${Math.round((usedKib * 1024) / MAX_SCOPES)} bytes each), ${full.free_kib} KiB free`);
    assert.ok(full.free_kib > full.capacity_kib / 4, `only ${full.free_kib} of ${full.capacity_kib} KiB free`);
    assert.ok((usedKib * 1024) / MAX_SCOPES <= 7168, "each scope within the 7 KiB the README and setup() count");

    // Nothing was lost: the first and the last scope keep their mode and reason, and hold.
    const first = await node.status(scopeName(0));
    assert.equal(first.state, "maintenance");
    assert.equal(first.reason, REASON);
    const last = scopeName(MAX_SCOPES - 1);
    assert.equal((await node.status(last)).state, "paused");
    const held = node.send(`/scoped/?scope=${last}&id=last`);
    await node.held(1, last);
    assert.equal((await node.control("resume", `scope=${last}`)).status, 200);
    assert.equal((await held.reply).status, 200);
    await assertIdle(node, last);
  });

  it("setup() refuses a max_scopes the zone cannot hold, naming both", async () => {
    const conf = nginxConfig({ setup: { max_scopes: 100000 } })
      .replace("listen 8080", "listen 18080").replace("listen 8081", "listen 18081")
      .replace("pid /run/nginx.pid;", "pid /tmp/t.pid;")
      .replace("error_log /var/log/nginx/error.log notice;", "error_log stderr notice;");
    const b64 = Buffer.from(conf).toString("base64");
    const r = await node.container.exec(["sh", "-c",
      `echo ${b64} | base64 -d > /tmp/t.conf && nginx -c /tmp/t.conf; code=$?; ` +
      `if [ -f /tmp/t.pid ]; then nginx -c /tmp/t.conf -s stop; while [ -f /tmp/t.pid ]; do sleep 0.05; done; fi; exit $code`]);
    assert.notEqual(r.exitCode, 0, r.output);
    assert.match(r.output, /intermission\.setup: option "max_scopes" = 100000 needs a state zone of \d+ KiB .* but lua_shared_dict intermission has 16384 KiB/);
  });
});
