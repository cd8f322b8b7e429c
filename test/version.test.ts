// One version number: package.json's, which the CLI prints, must be the Lua module's
// _VERSION, every rockspec's and the newest CHANGELOG entry's. No containers needed.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { ROOT } from "./harness/node.ts";

const read = (p: string) => readFileSync(path.join(ROOT, p), "utf8");
const version: string = JSON.parse(read("package.json")).version;

describe("one version number", () => {
  it("package.json and package-lock.json agree", () => {
    const lock = JSON.parse(read("package-lock.json"));
    assert.equal(lock.version, version);
    assert.equal(lock.packages[""].version, version);
  });

  it("the Lua module's _VERSION is package.json's", () => {
    // dist/ is what users load (and the build check keeps it equal to src/).
    const lua = read("dist/intermission.lua").match(/_VERSION = "([^"]*)"/);
    assert.ok(lua, "dist/intermission.lua sets no _VERSION");
    assert.equal(lua[1], version,
      `require("intermission")._VERSION is ${lua[1]} but package.json says ${version}: ` +
      `set _VERSION = "${version}" in src/intermission.ts and run npm run build`);
  });

  it("every rockspec carries it, in its name and its version field", () => {
    const specs = [
      ...readdirSync(ROOT).filter((f) => f.endsWith(".rockspec")),
      ...readdirSync(path.join(ROOT, "rocks")).filter((f) => f.endsWith(".rockspec")).map((f) => `rocks/${f}`),
    ];
    assert.deepEqual(specs.map((f) => path.basename(f)).sort(),
      ["intermission", "intermission-fleet", "intermission-sentinel"].map((n) => `${n}-${version}-1.rockspec`));
    for (const f of specs) {
      assert.match(read(f), new RegExp(`^version = "${version.replace(/\./g, "\\.")}-1"$`, "m"), f);
    }
  });

  it("the CHANGELOG's newest entry is this version", () => {
    const first = read("CHANGELOG.md").match(/^## (\S+)/m);
    assert.equal(first?.[1], version);
  });
});
