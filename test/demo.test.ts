// The README's demo, as a new user runs it: `npm run demo` brings the stack up with
// docker-compose and simulates a maintenance under load; zero requests may fail. Then it
// restarts a real PostgreSQL under load twice: on its own requests fail, inside
// `intermission run` none do. Then the application restarts under load with nobody
// pausing (an unplanned outage): through plain nginx requests fail, through intermission
// (outage_hold at its default) none do. The last two lines say both, once.
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { ROOT } from "./harness/node.ts";

function compose(...args: string[]) {
  const v1 = spawnSync("docker-compose", ["version"], { stdio: "ignore" }).status === 0;
  return v1
    ? spawnSync("docker-compose", args, { cwd: ROOT, encoding: "utf8" })
    : spawnSync("docker", ["compose", ...args], { cwd: ROOT, encoding: "utf8" });
}

describe("the demo", () => {
  after(() => {
    compose("down", "--remove-orphans", "--timeout", "2");
  });

  let output = "";
  it("comes up and passes a maintenance under load with zero failed requests", () => {
    const demo = spawnSync("bash", ["scripts/demo.sh"], { cwd: ROOT, encoding: "utf8", timeout: 600_000 });
    output = `${demo.stderr}\n${demo.stdout}`;
    assert.equal(demo.status, 0, output);
    const load = output.match(/load: (\d+) ok, (\d+) failed, slowest (\d+) ms/);
    assert.ok(load, output);
    assert.equal(Number(load[2]), 0, "failed requests");
    assert.ok(Number(load[1]) > 100, `traffic flowed: ${load[1]} requests`);
    assert.ok(Number(load[3]) >= 4000, `some requests were held through the 5 s maintenance (slowest ${load[3]} ms)`);
    assert.match(output, /maintenance: done, zero failed requests/);
    assert.match(output, /The demo stack is left running .*\n(.*\n)*.*docker-compose down +# stop it/);
    assert.match(output, /intermission: paused for \d+\.\ds; \d+ request\(s\) were held at resume/);
  });

  it("restarts a real database twice: requests fail without intermission, none inside intermission run", (t) => {
    const lines = output.trim().split("\n");
    t.diagnostic(lines[lines.length - 2]);
    const verdict = lines[lines.length - 2].match(/^without intermission: (\d+) failed requests; with intermission: (\d+)$/);
    assert.ok(verdict, `the demo ends with the verdict lines:\n${lines.slice(-5).join("\n")}`);
    const verdicts = output.match(/^without intermission: \d+ failed requests; with intermission: \d+$/gm) ?? [];
    assert.equal(verdicts.length, 1, "the verdict is printed once");
    assert.ok(Number(verdict[1]) > 0, "requests failed when the database restarted without intermission");
    assert.equal(Number(verdict[2]), 0, "failed requests inside intermission run");
    const loads = [...output.matchAll(/load: (\d+) ok, (\d+) failed/g)];
    assert.equal(loads.length, 5, "the sleep-5 maintenance, the two database restarts and the two application restarts each report their load");
    assert.ok(Number(loads[2][1]) > 100, `traffic flowed through the database restart inside intermission run: ${loads[2][1]}`);
    assert.match(output, /restart-primary\] pg_ctl restart -m fast/);
  });

  it("restarts the application unplanned, nobody pausing: requests fail through plain nginx, none through intermission (outage_hold)", (t) => {
    const lines = output.trim().split("\n");
    t.diagnostic(lines[lines.length - 1]);
    const verdict = lines[lines.length - 1].match(/^unplanned app restart, nobody pausing: without outage_hold: (\d+) failed requests; with outage_hold: (\d+)(?: \(and \d+ cut after nginx had written them to the stopping application: not held, see the README's "Not held"\))?$/);
    assert.ok(verdict, `the demo's last line is the unplanned verdict:\n${lines.slice(-5).join("\n")}`);
    const verdicts = output.match(/^unplanned app restart, nobody pausing: .*$/gm) ?? [];
    assert.equal(verdicts.length, 1, "the unplanned verdict is printed once");
    assert.ok(Number(verdict[1]) > 0, "requests failed when the application restarted behind plain nginx");
    assert.equal(Number(verdict[2]), 0, "failed requests through intermission with outage_hold");
    assert.equal((output.match(/restart-app: spawned \d+/g) ?? []).length, 2, "the application was restarted twice");
    const loads = [...output.matchAll(/load: (\d+) ok, (\d+) failed, slowest (\d+) ms/g)];
    assert.equal(loads.length, 5);
    // A loaded machine (CI, 2 cores) has seen 57 in the 4 s around the restart: the
    // verdict is the point, this only says that traffic flowed.
    assert.ok(Number(loads[4][1]) >= 20, `traffic flowed through the unplanned restart: ${loads[4][1]}`);
    // Held through the outage: the application boots in about a second (APP_BOOT_MS).
    assert.ok(Number(loads[4][3]) >= 800, `some requests were held through the restart (slowest ${loads[4][3]} ms)`);
  });
});
