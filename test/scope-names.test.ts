// Scope names and internal keys (issue 19, item 8): no valid scope name reaches another
// key of the state zone. Scopes named like every internal key and key family
// ("inflight", "scope", "busy", "lock", ...) leave in_flight, /metrics and each other
// alone; and keys left by an earlier version (the zones outlive a reload) are carried over.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";
import { assertIdle } from "./harness/held.ts";
import { waitFor } from "./harness/http.ts";

/** Every internal key and key family of the state zone, with and without the "#" of now. */
const NAMES = ["inflight", "scope", "scopes", "busy", "lock", "control_prefix", "fleet", "prober", "connect", "mode", "seq", "decided", "default-not"];

const EXTRA = `
        location /scoped/ {
            set $intermission_scope $arg_scope;
            access_by_lua_block        { require("intermission").access() }
            header_filter_by_lua_block { require("intermission").header_filter() }
            log_by_lua_block           { require("intermission").log() }
            proxy_pass http://backend;
        }
        location = /_zone {
            # The test's view into the state zone (no hooks): writes what an earlier version left.
            content_by_lua_block {
                local d = ngx.shared.intermission
                local k, v = ngx.unescape_uri(ngx.var.arg_k or ""), ngx.unescape_uri(ngx.var.arg_v or "")
                if ngx.var.arg_op == "set" then
                    d:set(k, v == "true" or tonumber(v) or v)
                elseif ngx.var.arg_op == "del" then
                    d:delete(k)
                end
                local value = d:get(k)
                ngx.say(require("cjson").encode({ value = value == nil and "nil" or value }))
            }
        }`;

/** The scopes /metrics reports (one intermission_state line per scope and state). */
async function metricScopes(node: NginxNode): Promise<string[]> {
  const text = (await node.control("metrics")).body;
  const scopes = new Set<string>();
  for (const m of text.matchAll(/^intermission_state\{scope="([^"]*)",state="running"\}/gm)) scopes.add(m[1]);
  return [...scopes].sort();
}

async function zone(node: NginxNode, op: "get" | "set" | "del", k: string, v = ""): Promise<unknown> {
  const r = await node.get(`/_zone?op=${op}&k=${encodeURIComponent(k)}&v=${encodeURIComponent(v)}`);
  assert.equal(r.status, 200, r.body);
  return r.json().value;
}

describe("scope names never reach internal keys", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ workers: 2, extraLocations: EXTRA, setup: { max_hold: 20, pause_ttl: 0 } });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("pause, hold, resume in scopes named like every internal key: in_flight, /metrics and the other scopes stay right", async () => {
    for (const scope of NAMES) {
      assert.equal((await node.control("pause", `scope=${scope}&reason=r-${scope}`)).status, 200, scope);
      const held = node.send(`/scoped/?scope=${scope}&id=${scope}`);
      await node.held(1, scope);
      const s = await node.status(scope);
      assert.equal(s.state, "paused", scope);
      assert.equal(s.reason, `r-${scope}`, scope);
      assert.equal((await node.status("default")).state, "running", `pausing ${scope} left default running`);
      assert.equal((await node.get(`/?id=free-${scope}`)).status, 200, `default still forwards while ${scope} is paused`);
      assert.equal((await node.control("resume", `scope=${scope}`)).status, 200, scope);
      assert.equal((await held.reply).status, 200, scope);
      await assertIdle(node, scope);
    }
    // The scope "inflight" once made in_flight read its keys' timestamps (about 1.8e9).
    await waitFor("in_flight 0", async () => (await node.status()).in_flight === 0);
    const metrics = (await node.control("metrics")).body;
    assert.match(metrics, /^intermission_in_flight 0$/m);
    // The scope "scope" once listed its own keys as 19 more scopes. Each scope is idle now
    // and its state reclaimed (reclaim.ts): /metrics lists live scopes only, and none of the
    // keys left reads as one.
    assert.deepEqual(await metricScopes(node), ["default"]);
    // Every scope runs: the hot path's busy count is back to 0, and each scope's counters are its own.
    assert.equal(await zone(node, "get", "busy"), 0);
    for (const scope of NAMES) {
      const s = await node.status(scope);
      assert.equal(s.counters.held, 1, scope);
      assert.equal(s.counters.released, 1, scope);
      assert.equal(s.held, 0, scope);
    }
  });

  it("keys of an earlier version (scope marks, fleet keys, an old worker's in-flight count) are carried over at a reload", async () => {
    // What 0.2.0 left: the mark "scope|<name>" and a worker's "inflight|<pid>".
    assert.equal((await node.control("pause", "scope=legacy")).status, 200);
    assert.equal((await node.control("resume", "scope=legacy")).status, 200);
    // Its state was reclaimed once idle (reclaim.ts): what 0.2.0 kept is written back.
    await zone(node, "del", "#scope|legacy");
    await zone(node, "set", "scope|legacy", "true");
    await zone(node, "set", "legacy|seq", "0");
    await zone(node, "set", "fleet|share", "7");
    // A live pid (the master, pid 1 in the container): a dead one is dropped from the sum (liveness.ts).
    await zone(node, "set", "inflight|1", "2");
    assert.equal((await node.status()).in_flight, 2, "an old generation's workers are counted in flight");
    await zone(node, "del", "inflight|1");
    await node.reload();
    await waitFor("the new workers", async () => (await node.shuttingDownWorkers()) === 0, 15_000);
    assert.equal(await zone(node, "get", "scope|legacy"), "nil", "the old mark is gone");
    assert.equal(await zone(node, "get", "#scope|legacy"), true, "the mark is carried over");
    assert.equal(await zone(node, "get", "fleet|share"), "nil");
    assert.equal(await zone(node, "get", "#fleet|share"), 7);
    assert.ok((await metricScopes(node)).includes("legacy"));
    // The scope "scope" works after the upgrade too.
    assert.equal((await node.control("pause", "scope=scope")).status, 200);
    assert.equal((await node.status("scope")).state, "paused");
    assert.equal((await node.control("resume", "scope=scope")).status, 200);
    await assertIdle(node, "scope");
    // "scope" was reclaimed once idle again; the carried-over "legacy" is listed until its
    // next release step or a sweep finds it idle.
    assert.deepEqual(await metricScopes(node), ["default", "legacy"]);
  });
});
