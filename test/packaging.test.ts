// The packages, installed the way users install them: the LuaRocks rock (its tree is
// the only intermission a node can load, and the walking skeleton passes on it), the
// CLI's npm tarball (installed into a throwaway prefix, nothing but the CLI in it, and it
// talks to a real node), and Debian's lua-resty-redis given its resty.redis name by a
// directory of links on lua_package_path, as the README shows.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { GenericContainer, Wait } from "testcontainers";
import type { StartedNetwork, StartedTestContainer } from "testcontainers";
import { NginxNode, ROOT, ensureImages, startRedis, newNetwork, DOCKER_DNS } from "./harness/node.ts";
import { nginxConfig } from "./harness/nginx-config.ts";
import { imageFor } from "./harness/install.ts";

const pkg = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8"));

function luaFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".lua")).sort();
}

describe("LuaRocks", () => {
  it("installs every module of dist/ and intermission.conf into the tree, and nothing else holds intermission", () => {
    ensureImages();
    const listing = execFileSync("docker", ["run", "--rm", imageFor("luarocks"), "sh", "-c",
      "test ! -e /opt/intermission && cd /opt/rocks/share/lua/5.1 && find . -type f | sort"], { encoding: "utf8" });
    const files = listing.trim().split("\n").map((f) => f.replace(/^\.\//, ""));
    assert.deepEqual(files.filter((f) => f.endsWith(".lua")).sort(), luaFiles(path.join(ROOT, "dist")));
    assert.ok(files.includes("intermission/intermission.conf"), listing);
  });

  it("passes the walking skeleton with only the rock's tree on lua_package_path", () => {
    // The skeleton test itself, unchanged; the harness wires the tree in (harness/install.ts).
    // NODE_TEST_CONTEXT would make the child report to this runner instead of printing.
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const r = spawnSync(process.execPath, ["--import", "tsx", "--test", "--test-reporter=tap", "test/skeleton.test.ts"], {
      cwd: ROOT, env: { ...env, INTERMISSION_INSTALL: "luarocks" }, encoding: "utf8",
    });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^# pass 3$/m, r.stdout);
    assert.match(r.stdout, /^# fail 0$/m);
  });
});

describe("npm package", () => {
  let work: string;
  let node: NginxNode;
  before(async () => {
    work = mkdtempSync(path.join(os.tmpdir(), "im-pack-"));
    node = await NginxNode.start();
  });
  after(async () => {
    await node?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("npm pack ships the CLI only, and npm install -g of it gives a working intermission", async () => {
    const packed = JSON.parse(execFileSync("npm", ["pack", "--json", "--pack-destination", work], { cwd: ROOT, encoding: "utf8" }));
    const files: string[] = packed[0].files.map((f: { path: string }) => f.path).sort();
    assert.deepEqual(files.filter((f) => !f.startsWith("bin/")), ["CHANGELOG.md", "LICENSE", "README.md", "package.json"]);
    assert.deepEqual(files.filter((f) => f.startsWith("bin/")), readdirSync(path.join(ROOT, "bin")).map((f) => `bin/${f}`).sort());

    const prefix = path.join(work, "prefix");
    execFileSync("npm", ["install", "--global", "--offline", "--no-audit", "--no-fund", "--prefix", prefix, path.join(work, packed[0].filename)],
      { encoding: "utf8" });
    const installed = path.join(prefix, "lib/node_modules/intermission");
    assert.equal(existsSync(path.join(installed, "node_modules")), false, "no dependencies come with it");
    for (const dir of ["src", "test", "bench", "cli", "dist"]) assert.equal(existsSync(path.join(installed, dir)), false, dir);

    const bin = path.join(prefix, "bin/intermission");
    const run = (args: string[]) => spawnSync(bin, args, { encoding: "utf8", env: { ...process.env, INTERMISSION_URL: "", INTERMISSION_TOKEN: "" } });
    const help = run(["--help"]);
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /^usage: intermission/);
    assert.equal(run(["--version"]).stdout, `${pkg.version}\n`);
    const status = run(["--url", node.url("/_intermission"), "status"]);
    assert.equal(status.status, 0, status.stderr);
    assert.match(status.stdout, /^node\s+scope\s+state\s+held/);
    assert.match(status.stdout, /running/);
    await node.assertCleanLog();
  });
});

describe("Debian's lua-resty-redis named by a directory on lua_package_path", () => {
  let network: StartedNetwork;
  let redis: StartedTestContainer;
  let node: NginxNode;
  // The README's commands, after removing the image's links from Debian's directory.
  const README_LINKS = [
    "rm /usr/share/lua/5.1/resty/redis.lua /usr/share/lua/5.1/resty/redis/connector.lua /usr/share/lua/5.1/resty/redis/sentinel.lua",
    "mkdir -p /opt/intermission/lua/resty/redis",
    "ln -s /usr/share/lua/5.1/nginx/redis.lua /opt/intermission/lua/resty/redis.lua",
    "ln -s /usr/share/lua/5.1/nginx/redis/connector.lua /opt/intermission/lua/resty/redis/connector.lua",
  ];
  const CONF = "/etc/intermission/nginx.conf";

  before(async () => {
    ensureImages();
    network = await newNetwork();
    redis = await startRedis(network);
    const conf = nginxConfig({ setup: { store: "redis", redis: { host: "redis", prefix: "links" } }, resolver: DOCKER_DNS })
      .replace('lua_package_path "/opt/intermission/dist/?.lua;;";',
        'lua_package_path "/opt/intermission/dist/?.lua;/opt/intermission/lua/?.lua;;";');
    assert.match(conf, /\/opt\/intermission\/lua\/\?\.lua/);
    const container = await new GenericContainer(imageFor("copy"))
      .withNetwork(network)
      .withCopyContentToContainer([{ content: conf, target: CONF }])
      .withCommand(["sh", "-c", `${README_LINKS.join(" && ")} && exec nginx -c ${CONF} -g "daemon off;"`])
      .withExposedPorts(8080, 8081)
      .withWaitStrategy(Wait.forHttp("/_backend/arrivals", 8081).forStatusCode(200))
      .start();
    const host = container.getHost();
    node = new NginxNode(container, `http://${host}:${container.getMappedPort(8080)}`, `http://${host}:${container.getMappedPort(8081)}`);
  });
  after(async () => {
    await node?.stop();
    await redis?.stop();
    await network?.stop();
  });

  it("runs fleet mode with Debian's directories untouched", async () => {
    await node.exec(["sh", "-c", "test ! -e /usr/share/lua/5.1/resty/redis.lua && test -L /opt/intermission/lua/resty/redis.lua"]);
    const paused = await node.control("pause", "reason=links");
    assert.equal(paused.status, 200, paused.body);
    const status = await node.status();
    assert.equal(status.state, "paused");
    assert.equal(status.fleet?.node_count, 1, JSON.stringify(status));
    const held = node.send("/?id=links");
    await node.held(1);
    assert.equal((await node.control("resume")).status, 200);
    assert.equal((await held.reply).status, 200);
    await node.assertCleanLog();
  });
});
