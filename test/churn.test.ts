// Churn (issue 9): steady load, a pause and a resume every few hundred milliseconds,
// clients that give up, two reloads in the middle. Every request answered 200 reached
// the upstream exactly once, none was stranded (no pause lasts over 0.4 s and max_hold
// is 3 s, so a 503 can only be a request left held: none may be), and afterwards the
// node is idle: nothing held, queued, leased or in flight.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { NginxNode } from "./harness/node.ts";
import { waitFor } from "./harness/http.ts";
import { sleep } from "./harness/held.ts";

type Outcome = { id: string; status: number | "gave-up" | "error" };

/** One request; a third of the clients give up after 0.1–0.8 s. */
function request(base: string, id: string, patience: number | undefined): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = http.get(`${base}/?id=${id}&delay=0.02`, { agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve({ id, status: res.statusCode ?? 0 }));
      res.on("error", () => resolve({ id, status: "error" }));
    });
    req.on("error", () => resolve({ id, status: patience !== undefined ? "gave-up" : "error" }));
    if (patience !== undefined) setTimeout(() => req.destroy(), patience);
  });
}

describe("churn: pause/resume every few hundred ms under load, clients giving up, reloads", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ setup: { release_window: 4, max_hold: 3, pause_ttl: 30 } });
  });
  after(async () => node?.stop());

  it("every answered request reached the upstream exactly once; nothing stranded (no 503); idle afterwards", async () => {
    const outcomes: Outcome[] = [];
    let running = true;
    let n = 0;
    const loops = Array.from({ length: 10 }, async (_, c) => {
      while (running) {
        const id = `c${c}-${++n}`;
        const patience = n % 3 === 0 ? 100 + (n % 8) * 100 : undefined;
        outcomes.push(await request(node.base, id, patience));
      }
    });
    const started = Date.now();
    let reloads = 0;
    try {
      while (Date.now() - started < 7000) {
        assert.equal((await node.control("pause")).status, 200);
        await sleep(100 + Math.random() * 300);
        assert.equal((await node.control("resume")).status, 200);
        await sleep(100 + Math.random() * 200);
        if (reloads < 2 && Date.now() - started > 2500 * (reloads + 1)) {
          await node.reload();
          reloads++;
        }
      }
    } finally {
      running = false;
      await Promise.all(loops);
    }
    await node.control("resume");

    await waitFor("the node to be idle", async () => {
      const s = await node.status();
      return s.held === 0 && s.queued === 0 && s.release.leases === 0 && s.in_flight === 0 && s.state === "running" && !s.draining;
    }, 15_000);
    const arrivals = (await node.arrivals()).ids;
    const seen = new Map<string, number>();
    for (const id of arrivals) seen.set(id, (seen.get(id) ?? 0) + 1);
    const twice = [...seen].filter(([, k]) => k > 1).map(([id]) => id);
    assert.deepEqual(twice, [], "no request reached the upstream twice");
    const ok = outcomes.filter((o) => o.status === 200);
    const refused = outcomes.filter((o) => o.status === 503);
    const other = outcomes.filter((o) => o.status !== 200 && o.status !== 503 && o.status !== "gave-up");
    assert.deepEqual(other, [], "every request answered 200 or 503, or its client gave up");
    assert.deepEqual(ok.filter((o) => !seen.has(o.id)), [], "every 200 reached the upstream");
    assert.deepEqual(refused.filter((o) => seen.has(o.id)), [], "no 503 reached the upstream");
    // README: a held request leaves when the pause ends (in order, window by window). Pauses
    // here last 0.1-0.4 s and the backlog is at most ten clients deep, so reaching max_hold
    // (3 s, then 503) means a request was stranded: left asleep, or never granted.
    assert.deepEqual(refused.map((o) => o.id), [], "nothing stranded: no request held until max_hold");
    assert.ok(ok.length > 100, `load went through: ${ok.length} ok, ${refused.length} refused, ${outcomes.length - ok.length - refused.length} gave up`);
    const c = (await node.status()).counters;
    assert.equal(c.timed_out, 0, `nothing held until max_hold: ${JSON.stringify(c)}`);
    assert.equal(c.held + c.retried, c.released + c.timed_out + c.aborted + c.maintenance, `the counters balance: ${JSON.stringify(c)}`);
    // The recording backend is in the same nginx (127.0.0.1:8081, kept-alive upstream
    // connections): a reload closes the old workers' idle ones, and a front request that
    // picked one up just then logs a reset and is sent again on a fresh connection (nginx does
    // that for a cached connection). Its client's outcome is checked above (200, once).
    await node.assertCleanLog([/recv\(\) failed \(104: Connection reset by peer\) while reading response header from upstream, .*upstream: "http:\/\/127\.0\.0\.1:8081\//]);
  });
});
