// nginx/intermission.conf defines the per-location variables at http level (an empty
// `map`), so that a location that does not `set` one reads "" silently, where nginx would
// otherwise log `using uninitialized "intermission_scope" variable` on every read (the
// README's snippet sets the scope in `location /` and not in the control location). A
// location's `set` must still win over the empty default.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";
import { sleep } from "./harness/held.ts";

// Sets the two per-location variables the harness's locations leave alone.
const EXTRA = `
        location /probe/ {
            set $intermission_health_check_path /probe/up;
            set $intermission_privileged_user_agent "^Probe";
            access_by_lua_block { require("intermission").access() }
            log_by_lua_block    { require("intermission").log() }
            proxy_pass http://backend;
        }`;

describe("per-location variables: empty defaults at http level", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ setup: { max_hold: 20 }, workers: 1, extraLocations: EXTRA });
  });
  after(async () => node?.stop());

  it("reads \"\" where a location sets nothing, the location's value where it does, and warns about neither", async () => {
    await node.newLogLines();
    // The control location sets no scope: status of the default scope, read from "".
    const status = await node.control("status");
    assert.equal(status.status, 200, status.body);

    // location /other/ sets $intermission_scope other: a pause of `other` holds it, and
    // not location /, which sets nothing (scope "default", running).
    assert.equal((await node.control("pause", "scope=other")).status, 200);
    const other = node.send("/other/?id=other");
    await node.held(1, "other");
    assert.equal((await node.get("/?id=free")).status, 200, "location / is not in scope other");
    assert.equal((await node.control("resume", "scope=other")).status, 200);
    assert.equal((await other.reply).status, 200);

    assert.equal((await node.control("pause", "scope=default")).status, 200);
    // location / sets nothing: held, with max_hold from setup().
    const plain = node.send("/?id=plain");
    // location /short/ sets $intermission_max_time 1: held, then answered 503 after 1 s.
    const short = node.send("/short/?id=short");
    // location /probe/ sets its own health check path and privileged user agent: those
    // pass, the rest is held.
    const up = await node.get("/probe/up");
    assert.equal(up.status, 200, "a location's `set $intermission_health_check_path` wins");
    const ua = await node.get("/probe/ua?id=ua", { "User-Agent": "Probe/1.0" });
    assert.equal(ua.status, 200, "a location's `set $intermission_privileged_user_agent` wins");
    const probe = node.send("/probe/x?id=probe");
    await node.held(3);

    const shortReply = await short.reply;
    assert.equal(shortReply.status, 503, "$intermission_max_time 1 from the location's set");
    assert.ok(shortReply.ms >= 900 && shortReply.ms < 5000, `held ${shortReply.ms} ms`);
    await sleep(200);
    assert.equal((await node.status()).held, 2, "location / keeps max_hold = 20 (its $intermission_max_time is \"\")");

    assert.equal((await node.control("resume", "scope=default")).status, 200);
    assert.equal((await plain.reply).status, 200);
    assert.equal((await probe.reply).status, 200);

    const lines = await node.assertCleanLog();
    const warned = lines.filter((l) => /using uninitialized "intermission_/.test(l));
    assert.deepEqual(warned, [], warned.join("\n"));
  });
});
