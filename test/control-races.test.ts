// Breaker: concurrency attacks on the release protocol (black box, README + INTERFACE only).
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";
import { PendingRequest, get, send, waitFor } from "./harness/http.ts";
import { ids, sleep, assertIdle } from "./harness/held.ts";

function balance(c: any, heldNow: number): void {
  // README: "held + retried = released + timed_out + aborted + maintenance + held now"
  assert.equal(c.held + c.retried, c.released + c.timed_out + c.aborted + c.maintenance + heldNow, `counters: ${JSON.stringify(c)}`);
}

/** One fresh connection per request, `loops` in parallel, until stop(). */
function load(base: string, loops: number, path: (id: string) => string) {
  const replies: { id: string; status: number }[] = [];
  let running = true;
  let n = 0;
  const all = Array.from({ length: loops }, async () => {
    while (running) {
      const id = `L${++n}`;
      const status = await get(base + path(id), { timeoutMs: 40_000 }).then((r) => r.status, () => 0);
      replies.push({ id, status });
    }
  });
  return { replies, async stop() { running = false; await Promise.all(all); } };
}

describe("break: pause/resume races from several control clients under load", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ workers: 2, setup: { release_window: 2, max_hold: 30, pause_ttl: 0 } });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("every request answered 200, each reached the upstream exactly once, idle afterwards", async () => {
    // README: "zero failed requests"; "A ticket's fate is decided once"; status settles.
    const l = load(node.base, 8, (id) => `/?id=${id}&delay=0.02`);
    await sleep(300);
    const controllers = Array.from({ length: 4 }, async (_, k) => {
      for (let i = 0; i < 25; i++) {
        const action = (i + k) % 2 === 0 ? "pause" : "resume";
        const r = await node.control(action, action === "pause" ? "ttl=0" : "");
        assert.equal(r.status, 200, r.body);
        await sleep(Math.random() * 40);
      }
    });
    await Promise.all(controllers);
    await node.control("resume");
    await sleep(300);
    await l.stop();
    const bad = l.replies.filter((r) => r.status !== 200);
    assert.deepEqual(bad, [], "zero failed requests");
    const arr = (await node.arrivals()).ids.filter((i) => i.startsWith("L"));
    const seen = new Map<string, number>();
    for (const i of arr) seen.set(i, (seen.get(i) ?? 0) + 1);
    const twice = [...seen].filter(([, n]) => n > 1);
    assert.deepEqual(twice, [], "none delivered twice");
    assert.equal(arr.length, l.replies.length, "each answered request reached the upstream");
    const s = await assertIdle(node);
    balance(s.counters, 0);
  });
});

describe("break: a huge burst, two workers", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ workers: 2, setup: { release_window: 64, max_hold: 60, max_held: 5000 } });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("2500 held requests: all 200, each once, never more than 64 at the backend, idle after", async () => {
    await node.control("pause", "ttl=0");
    const N = 2500;
    const pending: PendingRequest[] = [];
    for (let i = 1; i <= N; i++) {
      pending.push(send(node.url(`/?id=b${i}&delay=0.01`), { timeoutMs: 90_000 }));
      if (i % 250 === 0) await sleep(50);
    }
    await waitFor(`${N} held`, async () => (await node.status()).held === N, 60_000);
    await node.control("resume");
    const replies = await Promise.all(pending.map((p) => p.reply.catch((e) => ({ status: 0, body: String(e) }))));
    const bad = replies.filter((r) => r.status !== 200);
    assert.equal(bad.length, 0, `failed: ${bad.length}, e.g. ${bad[0]?.status} ${bad[0]?.body}`);
    const arr = await node.arrivals();
    assert.equal(new Set(arr.ids).size, N);
    assert.equal(arr.ids.length, N);
    assert.ok(Math.max(...arr.concurrency) <= 64, `window 64 exceeded: ${Math.max(...arr.concurrency)}`);
    await assertIdle(node, "default", 10_000);
  });
});

describe("break: clients aborting at the moment of the resume", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ workers: 2, setup: { release_window: 4, max_hold: 30 } });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("the others are all released, nothing twice, no slot or count leaks", async () => {
    await node.control("pause", "ttl=0");
    const N = 120;
    const pending = ids("a", N).map((id) => send(node.url(`/?id=${id}&delay=0.05`)));
    await waitFor(`${N} held`, async () => (await node.status()).held === N, 20_000);
    const resumed = node.control("resume");
    for (let i = 0; i < N; i += 2) {
      pending[i].reply.catch(() => undefined);
      pending[i].abort();
    }
    await resumed;
    const kept = await Promise.all(pending.filter((_, i) => i % 2 === 1).map((p) => p.reply));
    assert.deepEqual(kept.map((r) => r.status), kept.map(() => 200));
    const arr = (await node.arrivals()).ids;
    assert.equal(new Set(arr).size, arr.length, "nothing delivered twice");
    for (let i = 1; i < N; i += 2) assert.ok(arr.includes(`a${i + 1}`), `a${i + 1} released`);
    const s = await assertIdle(node);
    balance(s.counters, 0);
  });
});

describe("break: many scopes at once", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({
      workers: 2,
      setup: { release_window: 1, max_hold: 30 },
      extraLocations: `
        location /s/ {
            set $intermission_scope $arg_scope;
            access_by_lua_block        { require("intermission").access() }
            header_filter_by_lua_block { require("intermission").header_filter() }
            log_by_lua_block           { require("intermission").log() }
            proxy_pass http://backend/;
        }`,
    });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("40 scopes paused, held, resumed concurrently: every request once, each scope in order and idle", async () => {
    const scopes = ids("sc", 40);
    await Promise.all(scopes.map((s) => node.control("pause", `ttl=0&scope=${s}`)));
    const pending: Record<string, PendingRequest[]> = {};
    for (const s of scopes) pending[s] = [];
    for (let k = 1; k <= 3; k++) {
      for (const s of scopes) pending[s].push(node.send(`/s/?scope=${s}&id=${s}-${k}&delay=0.02`));
      await waitFor(`round ${k} held`, async () => {
        const st = await Promise.all(scopes.map((s) => node.status(s)));
        return st.every((x) => x.held === k);
      }, 20_000);
    }
    // Two control clients resume every scope at the same time.
    await Promise.all([...scopes, ...scopes].map((s) => node.control("resume", `scope=${s}`)));
    for (const s of scopes) {
      const rs = await Promise.all(pending[s].map((p) => p.reply));
      assert.deepEqual(rs.map((r) => r.status), [200, 200, 200]);
    }
    const arr = (await node.arrivals()).ids;
    assert.equal(arr.length, 120);
    for (const s of scopes) assert.deepEqual(arr.filter((i) => i.startsWith(`${s}-`)), [1, 2, 3].map((k) => `${s}-${k}`), `order in ${s}`);
    for (const s of scopes) await assertIdle(node, s);
  });
});
