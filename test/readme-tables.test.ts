// The README's measured tables are what bench/tables.ts makes of the stored runs in
// bench/results/, not figures typed by hand; each names the commit, machine and date it
// was measured at. No containers, no nginx: it reads files.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { applyTables, blockIn, BLOCKS, readResults, renderTables, resultsFile } from "../bench/tables.ts";
import { describeMachine } from "../bench/provenance.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const readme = readFileSync(path.join(ROOT, "README.md"), "utf8");

describe("README figures come from stored bench runs", () => {
  it("every measured table is in README.md once, between its markers", () => {
    for (const name of BLOCKS) {
      assert.equal(readme.split(`<!-- bench:${name} -->`).length, 2, `README.md needs one <!-- bench:${name} --> marker`);
      assert.equal(readme.split(`<!-- /bench:${name} -->`).length, 2, `README.md needs one <!-- /bench:${name} --> marker`);
      assert.notEqual(blockIn(readme, name), undefined, `<!-- bench:${name} --> must come before its closing marker`);
    }
  });

  it("each table is exactly what bench/tables.ts makes of bench/results/", () => {
    const made = renderTables(ROOT);
    for (const name of BLOCKS) {
      assert.equal(blockIn(readme, name), made.get(name),
        `README.md's ${name} table differs from ${resultsFile(name)}: run npm run tables (or npm run bench to measure again)`);
    }
    // And rewriting changes nothing anywhere else.
    assert.equal(applyTables(readme, made), readme);
  });

  it("each table names the commit, machine and date of its run", () => {
    for (const name of BLOCKS) {
      const r = readResults(ROOT, name);
      if (r === undefined) continue;
      assert.match(r.commit, /^[0-9a-f]{40}$/, `${resultsFile(name)}: commit`);
      assert.equal(typeof r.dirty, "boolean", `${resultsFile(name)}: dirty`);
      assert.ok(r.machine.cpu && r.machine.cores > 0 && r.machine.memory_gib > 0, `${resultsFile(name)}: machine`);
      const block = blockIn(readme, name)!;
      assert.ok(block.includes(`commit \`${r.commit.slice(0, 7)}\``), `${name}: the commit`);
      assert.ok(block.includes(describeMachine(r.machine)), `${name}: the machine`);
      assert.ok(block.includes(r.date.slice(0, 10)), `${name}: the date`);
    }
  });

  it("the stored runs are from one machine", () => {
    const machines = new Set(BLOCKS.map((name) => readResults(ROOT, name)).filter((r) => r !== undefined)
      .map((r) => describeMachine(r.machine)));
    assert.ok(machines.size <= 1, `the README's tables were measured on different machines: ${[...machines].join("; ")}`);
  });

  it("figures outside the tables do not quote a run: none of the old hand-typed ones is back", () => {
    // Each was typed into the README by hand once, without (or against) a stored run.
    let prose = readme;
    for (const name of BLOCKS) prose = prose.replace(blockIn(readme, name)!, "");
    for (const stale of ["a6e672f", "934a13a", "d99980e", "7f2b6c4", "1,193", "1,474", "5.3 s", "83 s", "0.35 ms", "342 requests"]) {
      assert.ok(!prose.includes(stale), `README.md quotes "${stale}" outside the generated tables: no stored run of this code backs it`);
    }
  });
});
