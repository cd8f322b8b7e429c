// setup() validates its options: a bad one stops nginx from starting, with a message
// that names it. Good ones start. (`nginx -t` does not run init_by_lua, so each case
// starts a second nginx inside the node's container, on other ports.)
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";
import { nginxConfig, LuaValue } from "./harness/nginx-config.ts";

describe("setup() options", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start();
  });
  after(async () => node?.stop());

  async function nginxStart(setup: { [k: string]: LuaValue }): Promise<{ code: number; output: string }> {
    const conf = nginxConfig({ setup })
      .replace("listen 8080", "listen 18080").replace("listen 8081", "listen 18081")
      .replace("pid /run/nginx.pid;", "pid /tmp/t.pid;")
      .replace("error_log /var/log/nginx/error.log notice;", "error_log stderr notice;");
    const b64 = Buffer.from(conf).toString("base64");
    const r = await node.container.exec(["sh", "-c",
      `echo ${b64} | base64 -d > /tmp/t.conf && nginx -c /tmp/t.conf; code=$?; ` +
      `if [ -f /tmp/t.pid ]; then nginx -c /tmp/t.conf -s stop; while [ -f /tmp/t.pid ]; do sleep 0.05; done; fi; exit $code`]);
    return { code: r.exitCode, output: r.output };
  }

  const bad: [string, { [k: string]: LuaValue }, RegExp][] = [
    ["negative max_hold", { max_hold: -1 }, /option "max_hold" must be a number from 0\.001 to 86400, got -1/],
    ["unknown option", { max_hodl: 5 }, /unknown option "max_hodl"/],
    ["bad on_timeout", { on_timeout: "drop" }, /option "on_timeout" must be one of reject, pass, got "drop"/],
    ["fractional max_held", { max_held: 2.5 }, /option "max_held" must be an integer/],
    ["zero release_window", { release_window: 0 }, /option "release_window" must be an integer from 1/],
    ["short token", { control_token: "short" }, /option "control_token" must be at least 16 characters/],
    ["bad regex", { privileged_user_agent: "(" }, /option "privileged_user_agent" is not a valid regex/],
    ["relative health path", { health_check_paths: ["up"] }, /option "health_check_paths" must hold paths starting with "\/"/],
    ["legacy not boolean", { legacy_endpoints: "yes" }, /option "legacy_endpoints" must be true or false/],
    ["redis without store", { redis: { host: "x" } }, /option "redis" needs store = "redis"/],
    ["bad redis port", { store: "redis", redis: { port: 0 } }, /redis option "port" must be an integer from 1 to 65535, got 0/],
    ["unknown redis option", { store: "redis", redis: { hots: "x" } }, /unknown redis option "hots"/],
    ["zero max_scopes", { max_scopes: 0 }, /option "max_scopes" must be an integer from 1/],
    ["zero release_lease", { release_lease: 0 }, /option "release_lease" must be a number from 0\.01/],
    ["negative outage_hold", { outage_hold: -1 }, /option "outage_hold" must be a number from 0 to 86400, got -1/],
    ["a 2xx failure status", { failure_statuses: [200] }, /option "failure_statuses" must be a list of HTTP statuses from 500 to 599/],
    ["a ready_probe that is not http", { ready_probe: { url: "ftp://x/" } }, /ready_probe option "url" must be like/],
    ["an unknown ready_probe option", { ready_probe: { url: "http://127.0.0.1:1/", every: 1 } }, /unknown ready_probe option "every"/],
    ["fleet_release_window without redis", { fleet_release_window: 10 }, /option "fleet_release_window" needs store = "redis"/],
    ["unknown store", { store: "memcached" }, /option "store" must be one of shared_dict, redis/],
    ["missing dict", { dict: "nosuch" }, /lua_shared_dict "nosuch", "nosuch_queue" and "nosuch_counters" must be declared/],
    ["a relative state_file", { state_file: "intermission.state" }, /option "state_file" must be an absolute file path .*, or false, got intermission\.state/],
    ["state_file = true", { state_file: true }, /option "state_file" must be an absolute file path/],
  ];
  for (const [name, setup, message] of bad) {
    it(`refuses ${name}`, async () => {
      const { code, output } = await nginxStart(setup);
      assert.notEqual(code, 0, output);
      assert.match(output, /intermission\.setup: /);
      assert.match(output, message);
    });
  }

  it("local mode starts without resty.redis; fleet mode then names what is missing", async () => {
    await node.exec(["mv", "/usr/share/lua/5.1/resty/redis.lua", "/tmp/redis.lua.hidden"]);
    try {
      const local = await nginxStart({});
      assert.equal(local.code, 0, local.output);
      assert.doesNotMatch(local.output, /init_by_lua error|\[emerg\]|resty\.redis/);
      const fleet = await nginxStart({ store: "redis" });
      assert.notEqual(fleet.code, 0, fleet.output);
      assert.match(fleet.output, /intermission\.setup: store = "redis" needs lua-resty-redis as "resty\.redis".*install lua-nginx-redis/);
    } finally {
      await node.exec(["mv", "/tmp/redis.lua.hidden", "/usr/share/lua/5.1/resty/redis.lua"]);
    }
  });

  it("accepts every option with sensible values", async () => {
    const { code, output } = await nginxStart({
      store: "redis",
      redis: { host: "127.0.0.1", port: 6379, password: "pw", username: "ops", database: 2, prefix: "im",
        connect_timeout: 0.5, read_timeout: 2, pool_size: 8, keepalive_timeout: 30 },
      max_hold: 10, on_timeout: "pass", pause_ttl: 0, max_held: 500, release_window: 16,
      health_check_paths: ["/up", "/healthz"], privileged_user_agent: "^Pingdom", control_token: "0123456789abcdef",
      legacy_endpoints: true, retry_after: 30, poll_interval: 0.005, state_file: "/tmp/intermission.state",
      max_scopes: 50, release_lease: 2, failure_statuses: [502, 504], outage_hold: 5,
      ready_probe: { url: "http://127.0.0.1:3000/up", successes: 2, interval: 0.5, timeout: 20 },
      fleet_release_window: 100,
    });
    assert.equal(code, 0, output);
    // It started (its fleet sync then finds no Redis here, which it reports and retries).
    assert.match(output, /start worker process/);
    assert.doesNotMatch(output, /intermission\.setup|init_by_lua error|\[emerg\]/);
  });
});

describe("hooks without setup() and without the shared dicts", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ bare: true });
  });
  after(async () => node?.stop());

  it("pass every request (no 500) and say why in the log", async () => {
    for (let i = 0; i < 3; i++) assert.equal((await node.get(`/?id=bare${i}`)).status, 200);
    const lines = await node.newLogLines();
    assert.ok(lines.some((l) => /setup\(\) was not called in init_by_lua/.test(l)), lines.join("\n"));
    assert.ok(lines.some((l) => /must be declared: include nginx\/intermission.conf/.test(l)), lines.join("\n"));
    assert.ok(!lines.some((l) => /runtime error|attempt to/.test(l)), lines.join("\n"));
  });
});
