// intermission check-config on the nginx host: it runs a configuration's init_by_lua
// (setup() and its options), which `nginx -t` skips, without disturbing the nginx that
// is running. The CLI runs inside a node container (this Node binary and bin/ mounted).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { GenericContainer, Wait } from "testcontainers";
import { NginxNode, ROOT, IMAGE, ensureImages } from "./harness/node.ts";
import { nginxConfig, LuaValue } from "./harness/nginx-config.ts";

const LIVE_CONF = "/etc/intermission/nginx.conf";

describe("intermission check-config", () => {
  let node: NginxNode;
  before(async () => {
    ensureImages();
    const container = await new GenericContainer(IMAGE)
      .withBindMounts([
        { source: process.execPath, target: "/usr/local/bin/node", mode: "ro" },
        { source: path.join(ROOT, "bin"), target: "/opt/cli/bin", mode: "ro" },
        { source: path.join(ROOT, "package.json"), target: "/opt/cli/package.json", mode: "ro" },
      ])
      .withCopyContentToContainer([{ content: nginxConfig({ setup: { max_hold: 20 } }), target: LIVE_CONF }])
      .withCommand(["nginx", "-c", LIVE_CONF, "-g", "daemon off;"])
      .withExposedPorts(8080, 8081)
      .withWaitStrategy(Wait.forHttp("/_backend/arrivals", 8081).forStatusCode(200))
      .start();
    const host = container.getHost();
    node = new NginxNode(container, `http://${host}:${container.getMappedPort(8080)}`, `http://${host}:${container.getMappedPort(8081)}`);
  });
  after(async () => node?.stop());

  async function write(file: string, text: string): Promise<void> {
    await node.exec(["sh", "-c", `mkdir -p ${path.dirname(file)} && echo ${Buffer.from(text).toString("base64")} | base64 -d > ${file}`]);
  }
  async function check(...args: string[]): Promise<{ code: number; output: string }> {
    return checkIn("/", ...args);
  }
  /** check-config run from the directory cwd, as a user in a shell there. */
  async function checkIn(cwd: string, ...args: string[]): Promise<{ code: number; output: string }> {
    const r = await node.container.exec(["node", "/opt/cli/bin/intermission.js", "check-config", ...args], { workingDir: cwd });
    return { code: r.exitCode, output: r.output };
  }
  const withSetup = (setup: { [k: string]: LuaValue }) => nginxConfig({ setup })
    .replace("listen 8080", "listen 18080").replace("listen 8081", "listen 18081");

  it("fails a bad option that nginx -t lets through, and names it", async () => {
    await write("/tmp/bad/nginx.conf", withSetup({ max_hold: -1 }));
    const t = await node.container.exec(["nginx", "-t", "-c", "/tmp/bad/nginx.conf"]);
    assert.equal(t.exitCode, 0, "nginx -t does not run init_by_lua: " + t.output);
    const { code, output } = await check("/tmp/bad/nginx.conf");
    assert.equal(code, 1, output);
    assert.match(output, /syntax ok \(nginx -t\)/);
    assert.match(output, /init_by_lua fails, so nginx would not start with this configuration/);
    assert.match(output, /intermission\.setup: option "max_hold" must be a number from 0\.001 to 86400, got -1/);
  });

  it("passes good options", async () => {
    await write("/tmp/good/nginx.conf", withSetup({ max_hold: 10, on_timeout: "pass", release_window: 8 }));
    const { code, output } = await check("/tmp/good/nginx.conf");
    assert.equal(code, 0, output);
    assert.match(output, /\/tmp\/good\/nginx\.conf: init_by_lua runs: setup\(\) accepts its options/);
  });

  it("finds init_by_lua in an included file, reading its Lua by Lua's rules", async () => {
    await write("/tmp/inc/conf.d/intermission.conf", `
init_by_lua_block {
    -- a } in a comment, and "}" in strings: the block ends at the last brace only
    local brace = "}" .. '}' .. [[ } ]]
    require("intermission").setup({ on_timeout = "drop" })
}
`);
    await write("/tmp/inc/nginx.conf", `
include /etc/nginx/modules-enabled/*.conf;
pid /tmp/inc/nginx.pid;
events {}
http {
    lua_package_path "/opt/intermission/dist/?.lua;;";
    include /opt/intermission/nginx/intermission.conf;
    include conf.d/*.conf;
    init_worker_by_lua_block { require("intermission").init_worker() }
    server { listen 18082; location / { return 200; } }
}
`);
    const { code, output } = await check("/tmp/inc/nginx.conf");
    assert.equal(code, 1, output);
    assert.match(output, /option "on_timeout" must be one of reject, pass, got "drop"/);
    // The block is on line 2 of the included file, setup() on the block's 4th line.
    assert.match(output, /init_by_lua\(\/tmp\/inc\/conf\.d\/intermission\.conf:2\):4: /);
  });

  it("reads a relative path from the caller's directory and cites the user's file and line", async () => {
    const conf = withSetup({ max_hold: -1 });
    await write("/tmp/rel/nginx/short.conf", conf);
    const line = conf.split("\n").findIndex((l) => l.includes("init_by_lua_block")) + 1;
    assert.ok(line > 1, conf);
    const { code, output } = await checkIn("/tmp/rel", "nginx/short.conf");
    assert.equal(code, 1, output);
    assert.doesNotMatch(output, /\/usr\/share\/nginx/);
    assert.match(output, /\/tmp\/rel\/nginx\/short\.conf: syntax ok/);
    assert.match(output, new RegExp(`init_by_lua\\(/tmp/rel/nginx/short\\.conf:${line}\\):1: intermission\\.setup: option "max_hold"`));
    // --prefix too is the caller's: Debian's modules-enabled loads modules/*.so from it.
    await node.exec(["ln", "-sfn", "/usr/lib/nginx/modules", "/tmp/rel/modules"]);
    const good = withSetup({ max_hold: 10 });
    await write("/tmp/rel/nginx/good.conf", good);
    const ok = await checkIn("/tmp", "--prefix", "rel", "rel/nginx/good.conf");
    assert.equal(ok.code, 0, ok.output);
    assert.match(ok.output, /\/tmp\/rel\/nginx\/good\.conf: init_by_lua runs/);
  });

  it("passes the sample nginx/nginx.conf under a prefix of the user's (nginx -p), as on a Debian host", async () => {
    // Debian's modules-enabled files load modules/*.so relative to the prefix: the sample
    // must load them by absolute path to start with `nginx -p DIR`.
    await node.exec(["mkdir", "-p", "/tmp/prefix"]);
    // The image links the sample's logs to /dev/stderr, which nginx cannot open when its
    // stderr is check-config's socket (ENXIO): plain files here, as on a host.
    await node.exec(["rm", "-f", "/var/log/nginx/intermission-error.log", "/var/log/nginx/intermission-access.log"]);
    const t = await node.container.exec(["nginx", "-t", "-p", "/tmp/prefix", "-c", "/opt/intermission/nginx/nginx.conf"]);
    assert.equal(t.exitCode, 0, t.output);
    const { code, output } = await check("--prefix", "/tmp/prefix", "/opt/intermission/nginx/nginx.conf");
    assert.equal(code, 0, output);
    assert.match(output, /init_by_lua runs: setup\(\) accepts its options/);
  });

  it("fails a map of $intermission_scope that intermission.conf's empty default replaces", async () => {
    const map = "map $host $intermission_scope { default site; }";
    const include = /^ *include \/opt\/intermission\/nginx\/intermission\.conf;$/m;
    const conf = withSetup({ max_hold: 10 });
    assert.match(conf, include);
    await write("/tmp/map/before.conf", conf.replace(include, (inc) => `    ${map}\n${inc}`));
    const line = conf.split("\n").findIndex((l) => include.test(l)) + 1;
    const before = await check("/tmp/map/before.conf");
    assert.equal(before.code, 1, before.output);
    assert.match(before.output, new RegExp(`/tmp/map/before\\.conf:${line}: this map of \\$intermission_scope never applies: ` +
      `the map at /opt/intermission/nginx/intermission\\.conf:\\d+ replaces it`));
    await write("/tmp/map/after.conf", conf.replace(include, (inc) => `${inc}\n    ${map}`));
    const after = await check("/tmp/map/after.conf");
    assert.equal(after.code, 0, after.output);
  });

  it("reports a syntax error as nginx -t does, and a configuration without init_by_lua", async () => {
    await write("/tmp/syntax/nginx.conf", "events {}\nhttp { server { listen 18083 } \n");
    const broken = await check("/tmp/syntax/nginx.conf");
    assert.equal(broken.code, 1, broken.output);
    assert.match(broken.output, /nginx -t fails:\n.*\[emerg\]/);
    await write("/tmp/none/nginx.conf", "events {}\nhttp { server { listen 18084; } }\n");
    const none = await check("/tmp/none/nginx.conf");
    assert.equal(none.code, 1, none.output);
    assert.match(none.output, /no init_by_lua in the http block/);
  });

  it("leaves the running nginx alone: its pid file, its log, its traffic", async () => {
    const pid = await node.exec(["cat", "/run/nginx.pid"]);
    await check(LIVE_CONF);
    assert.equal(await node.exec(["cat", "/run/nginx.pid"]), pid);
    const { code, output } = await check(LIVE_CONF);
    assert.equal(code, 0, output);
    assert.equal((await node.get("/?id=after")).status, 200);
    assert.equal((await node.status()).state, "running");
    const lines = await node.assertCleanLog();
    assert.ok(!lines.some((l) => /init_by_lua|check-config/.test(l)), lines.join("\n"));
  });
});
