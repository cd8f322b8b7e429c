// Issue 23, item 3: scopes are never forgotten. A scope that runs with nothing held,
// queued or leased is idle and its state is reclaimed (src/intermission/reclaim.ts), so
// max_scopes (1,000 by default) bounds the live scopes, not every scope a node has seen:
// 5,000 distinct scopes paused and resumed leave the state zone as they found it, and a
// new scope still pauses, holds and releases. A scope in maintenance is never reclaimed.
// A scope that turns idle only as time passes (its back-off runs out) is swept when a new
// scope meets the bound. Before the fix, the 1,001st distinct scope's pause answered 409
// for good (and with the sweep taken out, the last test's fourth scope answers 409).
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";
import { SCOPED_LOCATION } from "./harness/nginx-config.ts";
import { assertIdle, sleep } from "./harness/held.ts";
import { waitFor } from "./harness/http.ts";

const SCOPES = 5000;
/** Control requests in flight at once. */
const PARALLEL = 40;

describe("idle scopes are reclaimed: max_scopes bounds the live ones", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({
      workers: 2,
      extraLocations: SCOPED_LOCATION,
    });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it(`${SCOPES} distinct scopes paused and resumed: no 409, no 5xx, the state zone back near its start; a new pause holds, maintenance stays`, { timeout: 300_000 }, async () => {
    const start = (await node.status()).shared_dict.state;
    assert.equal((await node.control("maintenance", "scope=kept&reason=throughout")).status, 200);

    const statuses = new Map<number, number>();
    const failures: string[] = [];
    let next = 0;
    const worker = async () => {
      while (next < SCOPES) {
        const i = next++;
        for (const action of ["pause", "resume"]) {
          const r = await node.control(action, `scope=tenant-${i}${action === "pause" ? "&reason=move" : ""}`);
          statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
          if (r.status !== 200 && failures.length < 5) failures.push(`${action} tenant-${i}: ${r.status} ${r.body}`);
        }
      }
    };
    const began = Date.now();
    await Promise.all(Array.from({ length: PARALLEL }, worker));
    console.log(`# ${SCOPES} pauses and resumes in ${((Date.now() - began) / 1000).toFixed(1)} s: ${JSON.stringify(Object.fromEntries(statuses))}`);
    assert.deepEqual(failures, [], "every pause and resume answered 200 (no 409 at the bound, no 5xx)");
    assert.equal(statuses.get(200), 2 * SCOPES);

    // A reclaimed scope reads as one never seen: running, nothing held.
    const gone = await node.status("tenant-0");
    assert.equal(gone.state, "running");
    assert.equal(gone.held, 0);
    assert.equal(gone.queued, 0);

    // A fresh pause of a new scope holds a request, and its resume releases it.
    assert.equal((await node.control("pause", "scope=fresh")).status, 200);
    const held = node.send("/scoped/?scope=fresh&id=fresh-1");
    await node.held(1, "fresh");
    assert.equal((await node.control("resume", "scope=fresh")).status, 200);
    assert.equal((await held.reply).status, 200);
    await assertIdle(node, "fresh");

    // The scope in maintenance throughout still answers 503, and is listed.
    assert.equal((await node.get("/scoped/?scope=kept&id=k1")).status, 503);
    const kept = await node.status("kept");
    assert.equal(kept.state, "maintenance");
    assert.equal(kept.reason, "throughout");
    const metrics = (await node.control("metrics")).body;
    assert.match(metrics, /intermission_state\{scope="kept",state="maintenance"\} 1/);
    assert.doesNotMatch(metrics, /scope="tenant-1"/, "a reclaimed scope is not listed");

    // The state zone is back near its start: what is left is the scope in maintenance.
    const end = await waitFor("the state zone back near its start", async () => {
      const z = (await node.status()).shared_dict.state;
      return start.free_kib - z.free_kib <= 32 ? z : undefined;
    });
    console.log(`# state zone: ${start.free_kib} KiB free at the start, ${end.free_kib} KiB after ${SCOPES} scopes (${(start.free_kib - end.free_kib).toFixed(1)} KiB kept)`);

    assert.equal((await node.control("resume", "scope=kept")).status, 200);
    assert.equal((await node.get("/scoped/?scope=kept&id=k2")).status, 200);
  });

  it("reclaiming other scopes changes nothing for a request held in a paused scope", { timeout: 120_000 }, async () => {
    assert.equal((await node.control("pause", "scope=holder")).status, 200);
    const held = node.send("/scoped/?scope=holder&id=holder-1");
    await node.held(1, "holder");
    // Scopes that come and go meanwhile (each reclaimed at its resume), some with a request held and released.
    for (let i = 0; i < 200; i += 20) {
      await Promise.all(Array.from({ length: 20 }, async (_, j) => {
        const scope = `passing-${i + j}`;
        assert.equal((await node.control("pause", `scope=${scope}`)).status, 200);
        const r = j % 5 === 0 ? node.send(`/scoped/?scope=${scope}&id=${scope}`) : undefined;
        if (r) await node.held(1, scope);
        assert.equal((await node.control("resume", `scope=${scope}`)).status, 200);
        if (r) assert.equal((await r.reply).status, 200);
      }));
    }
    const status = await node.status("holder");
    assert.equal(status.state, "paused");
    assert.equal(status.held, 1);
    assert.equal((await node.control("resume", "scope=holder")).status, 200);
    assert.equal((await held.reply).status, 200);
    await assertIdle(node, "holder");
    // Every passing scope was reclaimed once its request was done.
    await waitFor("passing scopes reclaimed", async () => !/scope="passing-/.test((await node.control("metrics")).body));
  });
});

describe("a scope that turns idle with nobody looking is reclaimed when a new scope meets max_scopes", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({
      setup: { max_scopes: 3 },
      extraLocations: SCOPED_LOCATION,
    });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("the last released request fails at the gateway: its back-off keeps the scope until the sweep at the bound", { timeout: 60_000 }, async () => {
    // Released, it fails (502): its lease comes back as a failure and starts a back-off,
    // so the scope is not idle when its release ends, and nothing looks at it again.
    assert.equal((await node.control("pause", "scope=tomb")).status, 200);
    const failing = node.send("/scoped/?scope=tomb&id=t1&status=502");
    await node.held(1, "tomb");
    assert.equal((await node.control("resume", "scope=tomb")).status, 200);
    assert.equal((await failing.reply).status, 502);
    await sleep(300); // the back-off (0.1 s after a first failure) runs out: time that must pass
    assert.equal((await node.control("pause", "scope=a")).status, 200);
    assert.equal((await node.control("pause", "scope=b")).status, 200);
    // tomb, a and b have state: a fourth is within the bound only once tomb is swept.
    const c = await node.control("pause", "scope=c");
    assert.equal(c.status, 200, c.body);
    const d = await node.control("pause", "scope=d");
    assert.equal(d.status, 409, "a, b and c are live: the bound holds");
    assert.match(d.json().error, /max_scopes = 3/);
    for (const s of ["a", "b", "c"]) assert.equal((await node.control("resume", `scope=${s}`)).status, 200);
    assert.equal((await node.control("pause", "scope=d")).status, 200);
    assert.equal((await node.control("resume", "scope=d")).status, 200);
  });
});
