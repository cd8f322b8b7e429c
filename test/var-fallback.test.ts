// Per-location variables (issue 19, item 11): a variable `set` in one location reads ""
// in every other location, and so does one declared at http level by
// `map ... { default ""; }`. Unset or empty must mean "use the setup() option", for
// every variable: $intermission_privileged_user_agent, $intermission_max_time,
// $intermission_health_check_path, $intermission_scope / $app_name.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";
import { assertIdle } from "./harness/held.ts";

const HOOKS = `
            access_by_lua_block        { require("intermission").access() }
            header_filter_by_lua_block { require("intermission").header_filter() }
            log_by_lua_block           { require("intermission").log() }
            proxy_pass http://backend;`;

/** Locations that set each variable; "/" (the harness's) sets none of them. */
const LOCATIONS = `
        location /ua/ {
            set $intermission_privileged_user_agent "Special";
            ${HOOKS}
        }
        location /hc/ {
            set $intermission_health_check_path /hc/ping;
            ${HOOKS}
        }`;

/** friction's wiring: every variable declared at http level, "" unless a location sets it. */
const MAPS = ["intermission_privileged_user_agent", "intermission_max_time", "intermission_health_check_path", "intermission_scope", "app_name"]
  .map((v) => `map $host $${v} { default ""; }`).join("\n    ");

for (const variant of ["set in other locations", "declared by map with default \"\""] as const) {
  describe(`per-location variables fall back to setup() when unset or empty (${variant})`, () => {
    let node: NginxNode;
    before(async () => {
      node = await NginxNode.start({
        workers: 2,
        httpDirectives: variant.startsWith("declared") ? MAPS : "",
        extraLocations: LOCATIONS,
        setup: { privileged_user_agent: "Pingdom", health_check_paths: ["/up"], max_hold: 2.5, pause_ttl: 0 },
      });
    });
    after(async () => node?.stop());
    afterEach(async () => node.assertCleanLog([/using uninitialized "intermission_/]));

    it("privileged_user_agent, health_check_paths, max_hold and the scope of setup() apply where the variable is not set", async () => {
      assert.equal((await node.control("pause", "ttl=0")).status, 200);

      // privileged_user_agent: "Pingdom" passes in "/", though /ua/ sets its own pattern.
      const pingdom = await node.get("/?id=pingdom", { "User-Agent": "Pingdom.com_bot_version_1.4" });
      assert.equal(pingdom.status, 200, "setup()'s privileged_user_agent applies in /");
      // ... and /ua/'s own pattern applies there (and replaces setup()'s).
      assert.equal((await node.get("/ua/?id=special", { "User-Agent": "Special/1.0" })).status, 200);

      // health_check_paths: /up passes in "/", though /hc/ sets its own path.
      assert.equal((await node.get("/up?id=up")).status, 200, "setup()'s health_check_paths apply in /");
      assert.equal((await node.get("/hc/ping?id=hcping")).status, 200);

      // max_hold: "/" holds for setup()'s 2.5 s (the harness's /short/ sets 1 s).
      // The scope: "/" holds in "default" (/other/ and /seed/ set theirs).
      const held = node.send("/?id=held");
      await node.held(1, "default");
      assert.equal((await node.status("other")).held, 0);
      const r = await held.reply;
      assert.equal(r.status, 503, "answered at max_hold");
      assert.ok(r.ms > 2200 && r.ms < 4500, `held ${Math.round(r.ms)} ms, not max_hold = 2.5 s`);

      const arrived = (await node.arrivals()).ids;
      assert.deepEqual(arrived.sort(), ["hcping", "pingdom", "special", "up"]);
      assert.equal((await node.control("resume")).status, 200);
      await assertIdle(node);
    });
  });
}
