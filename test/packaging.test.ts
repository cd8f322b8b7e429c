// The packages, installed the way users install them: the LuaRocks rock (its tree is
// the only intermission a node can load, and the walking skeleton passes on it) and the
// CLI's npm tarball (installed into a throwaway prefix, nothing but the CLI in it, and it
// talks to a real node).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { NginxNode, ROOT, ensureImages } from "./harness/node.ts";

const pkg = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8"));

function luaFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".lua")).sort();
}

describe("LuaRocks", () => {
  const rockImage = (): string => {
    const env = { ...process.env, INTERMISSION_INSTALL: "luarocks" };
    return execFileSync(process.execPath, ["--import", "tsx", "-e",
      'import("./test/harness/install.ts").then((m) => process.stdout.write(m.IMAGE))'], { cwd: ROOT, env, encoding: "utf8" });
  };

  it("installs every module of dist/ and intermission.conf into the tree, and nothing else holds intermission", () => {
    ensureImages();
    const listing = execFileSync("docker", ["run", "--rm", rockImage(), "sh", "-c",
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
    assert.match(status.stdout, /^node\s+state\s+held/);
    assert.match(status.stdout, /running/);
    await node.assertCleanLog();
  });
});
