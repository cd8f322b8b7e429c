// Breaker, round 2: attacks written from README.md and INTERFACE.md only (black box),
// on what changed recently: per-request records across internal redirects, the in-flight
// count that drain relies on, hundreds in flight in one worker, reloads mid-pause and
// mid-drain, control flapping under steady load, and the retry lane.
// Each test quotes the promise it checks. Four of them failed against ad26539 and were
// fixed after: status counting its own control request, a second control location held
// at server level, holds cut by worker_shutdown_timeout missing from the counters, and
// the retry lane running out of nginx's internal redirects (a 500).
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { NginxNode } from "./harness/node.ts";
import { Reply, get, waitFor } from "./harness/http.ts";
import { ids, sleep, holdInOrder, assertIdle } from "./harness/held.ts";
import { TestApp, READ_BODY_LUA } from "./harness/app.ts";
import { RETRY_ON_ERROR, retryLocation } from "./harness/nginx-config.ts";

// ---------------------------------------------------------------------------------------
// helpers

const HOOKS = `
            access_by_lua_block        { require("intermission").access() }
            header_filter_by_lua_block { require("intermission").header_filter() }
            log_by_lua_block           { require("intermission").log() }`;
const PROXY_SETTINGS = `
            proxy_http_version 1.1;
            proxy_set_header Connection "";`;

/** README: "held + retried = released + timed_out + aborted + maintenance + held now". */
function assertBalanced(s: any): void {
  const c = s.counters;
  assert.equal(c.held + c.retried, c.released + c.timed_out + c.aborted + c.maintenance + s.held, `counters do not balance: ${JSON.stringify(c)} held now ${s.held}`);
}

/** A request on a given agent (keep-alive reuse), never rejecting: status 0 on a socket error. */
function request(url: string, agent: http.Agent | false, opts: { method?: string; body?: string; timeoutMs?: number } = {}): Promise<{ status: number; body: string; ms: number; error?: string }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const req = http.request(url, { method: opts.method ?? "GET", agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", (e) => resolve({ status: 0, body: "", ms: performance.now() - t0, error: String(e) }));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), ms: performance.now() - t0 }));
    });
    req.on("error", (e) => resolve({ status: 0, body: "", ms: performance.now() - t0, error: String(e) }));
    req.setTimeout(opts.timeoutMs ?? 60_000, () => req.destroy(new Error("client timeout")));
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

/** pause?drain=S on a fresh connection; returns the JSON answer and how long it took. */
async function pauseDrain(node: NginxNode, drain: number, extra = ""): Promise<{ j: any; ms: number }> {
  const t0 = performance.now();
  const r = await node.control("pause", `drain=${drain}${extra ? `&${extra}` : ""}`);
  assert.equal(r.status, 200, r.body);
  return { j: r.json(), ms: performance.now() - t0 };
}

/** The backend's own count of requests it is serving right now. */
async function backendActive(node: NginxNode): Promise<number> {
  return Number((await node.arrivals()).active);
}

async function inFlightZero(node: NginxNode, ms = 5000): Promise<void> {
  let last: any;
  try {
    await waitFor("in_flight 0", async () => (last = await node.status()).in_flight === 0, ms);
  } catch {
    assert.fail(`in_flight stuck at ${last?.in_flight} while idle (backend active ${await backendActive(node)})`);
  }
}

/** README: "Zero is exact, which is what drain needs": an idle node drains at once. */
async function assertDrainsAtOnce(node: NginxNode): Promise<void> {
  const { j, ms } = await pauseDrain(node, 1.5);
  await node.control("resume");
  assert.equal(j.drained, true, `idle node did not drain: ${JSON.stringify(j)}`);
  assert.equal(j.in_flight, 0, JSON.stringify(j));
  assert.ok(ms < 1400, `an idle drain took ${Math.round(ms)} ms`);
}

/** Keeps `connections` keep-alive request loops running until stop(). */
function steadyLoad(base: string, connections: number, path: (id: string) => string) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  const replies: { status: number; ms: number; id: string; error?: string }[] = [];
  let running = true;
  let n = 0;
  const loops = Array.from({ length: connections }, async () => {
    while (running) {
      const id = `s${++n}`;
      const r = await request(base + path(id), agent, { timeoutMs: 30_000 });
      replies.push({ status: r.status, ms: r.ms, id, error: r.error });
    }
  });
  return {
    replies,
    async stop() {
      running = false;
      await Promise.all(loops);
      agent.destroy();
    },
  };
}

// ---------------------------------------------------------------------------------------
// (a) per-request bookkeeping across internal redirects, hooks in the locations

const REDIRECT_LOCATIONS = `
        # error_page to a named location; the upstream's own 502 is intercepted after a delay,
        # so other requests start and end between the two access() calls.
        location /epn/ {${HOOKS}${PROXY_SETTINGS}
            proxy_intercept_errors on;
            proxy_pass http://backend;
            error_page 502 = @epn_target;
        }
        location @epn_target {${HOOKS}${PROXY_SETTINGS}
            proxy_pass http://backend/target?id=$arg_id&delay=$arg_delay2;
        }
        # error_page to a URI, after a refused connection.
        location /epu/ {${HOOKS}${PROXY_SETTINGS}
            proxy_pass http://127.0.0.1:9;
            error_page 502 = /epu_target/?id=$arg_id;
        }
        location /epu_target/ {${HOOKS}${PROXY_SETTINGS}
            proxy_pass http://backend;
        }
        # try_files to a named location, hooks in both.
        location /tf/ {${HOOKS}
            try_files /nonexistent @tf_target;
        }
        location @tf_target {${HOOKS}${PROXY_SETTINGS}
            proxy_pass http://backend;
        }
        # ngx.exec from rewrite_by_lua (before any access()), and from access_by_lua after access().
        location /exr/ {
            rewrite_by_lua_block { return ngx.exec("/ex_target/", ngx.var.args) }
        }
        location /exa/ {
            access_by_lua_block {
                require("intermission").access()
                return ngx.exec("/ex_target/", ngx.var.args)
            }
            log_by_lua_block { require("intermission").log() }
        }
        location /ex_target/ {${HOOKS}${PROXY_SETTINGS}
            proxy_pass http://backend;
        }
        # a chain: hooks, error_page to a URI whose rewrite_by_lua ngx.exec()s a named location.
        location /chain/ {${HOOKS}${PROXY_SETTINGS}
            proxy_intercept_errors on;
            proxy_pass http://backend;
            error_page 502 = /chain2/?id=$arg_id;
        }
        location /chain2/ {
            rewrite_by_lua_block { return ngx.exec("@chain3") }
        }
        location @chain3 {${HOOKS}${PROXY_SETTINGS}
            proxy_pass http://backend/chain3?id=$arg_id;
        }`;

/** One request of each redirect kind, by id. */
const KINDS: Record<string, (id: string) => string> = {
  epn: (id) => `/epn/?id=${id}&status=502&delay=0.05&delay2=0.05`,
  epu: (id) => `/epu/?id=${id}`,
  tf: (id) => `/tf/?id=${id}&delay=0.05`,
  exr: (id) => `/exr/?id=${id}&delay=0.05`,
  exa: (id) => `/exa/?id=${id}&delay=0.05`,
  chain: (id) => `/chain/?id=${id}&status=502&delay=0.05`,
};

describe("round2 (a): internal redirects with the hooks in each location (2 workers)", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ workers: 2, setup: { release_window: 2, max_hold: 15 }, extraLocations: REDIRECT_LOCATIONS });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog([/connect\(\) failed \(111: Connection refused\)/]));

  for (const [kind, path] of Object.entries(KINDS)) {
    it(`${kind}: running, 40 concurrent redirected requests leave in_flight at exactly 0 and drain at once`, async () => {
      // README: "log() finds that record and undoes exactly what access() did, once, even
      // across internal redirects (error_page, try_files, ngx.exec)". "Zero is exact".
      const replies = await Promise.all(ids(`${kind}-r`, 40).map((id) => get(node.url(path(id)))));
      assert.deepEqual(replies.map((r) => r.status), replies.map(() => 200), replies.map((r) => r.body).join("|"));
      await inFlightZero(node);
      await assertDrainsAtOnce(node);
    });

    it(`${kind}: paused, each request is held once, released once, in order; counters balance; idle after`, async () => {
      // README: "access() ... is idempotent per request"; "held + retried = released + ...".
      await node.resetBackend();
      const before = (await node.status()).counters;
      await node.control("pause", "ttl=0");
      const pending = await holdInOrder(node, ids(`${kind}-h`, 5).map(path));
      await node.control("resume");
      const replies = await Promise.all(pending.map((p) => p.reply));
      assert.deepEqual(replies.map((r) => r.status), replies.map(() => 200), replies.map((r) => r.body).join("|"));
      const s = await assertIdle(node);
      assert.equal(s.counters.held - before.held, 5, `held once each: ${JSON.stringify(s.counters)}`);
      assert.equal(s.counters.released - before.released, 5);
      assertBalanced(s);
      // Every request reached its final target once (the epn/chain kinds also hit the first upstream once).
      const arrived = (await node.arrivals()).ids;
      for (const id of ids(`${kind}-h`, 5)) {
        const n = arrived.filter((a) => a === id).length;
        assert.ok(n === 1 || (n === 2 && (kind === "epn" || kind === "chain")), `${id} arrived ${n} times: ${arrived}`);
      }
      await assertDrainsAtOnce(node);
    });
  }

  it("a request that passed before the pause is not held again by its redirect target's access()", async () => {
    // README: "access() goes in every location you want held; it is idempotent per request."
    await node.resetBackend();
    const p = node.send("/epn/?id=straddle&status=502&delay=1&delay2=0.1");
    await waitFor("the first leg at the upstream", async () => (await backendActive(node)) === 1);
    await node.control("pause", "ttl=0");
    const r = await Promise.race([p.reply, sleep(4000).then(() => null)]);
    await node.control("resume");
    const late = r ?? (await p.reply);
    assert.ok(r !== null, `held again by its redirect target while paused (answered ${late.status} only after the resume)`);
    assert.equal(late.status, 200);
    await inFlightZero(node);
    assertBalanced(await node.status());
  });

  it("mixed redirect kinds under a pause/resume with in-flight requests straddling it: in_flight exactly 0 after", async () => {
    // README: "in_flight counts every request on the node between access() and log() ... Zero is exact".
    await node.resetBackend();
    const kinds = Object.values(KINDS);
    const first = ids("mix-a", 60).map((id, i) => node.send(kinds[i % kinds.length](id).replace("delay=0.05", "delay=0.3")));
    await node.control("pause", "ttl=0");
    const second = ids("mix-b", 30).map((id, i) => node.send(kinds[i % kinds.length](id)));
    await waitFor("some held", async () => (await node.status()).held > 0);
    await node.control("resume");
    const replies = await Promise.all([...first, ...second].map((p) => p.reply));
    assert.deepEqual(replies.map((r) => r.status), replies.map(() => 200));
    await assertIdle(node);
    assertBalanced(await node.status());
    await assertDrainsAtOnce(node);
  });
});

// ---------------------------------------------------------------------------------------
// (a) a location without the log hook (documented to stay counted), then the same
// keep-alive connection's next request while paused

describe("round2 (a): an error_page target without log(), then the next request on the connection", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({
      workers: 1,
      setup: { max_hold: 10 },
      extraLocations: `
        location /nolog/ {${HOOKS}${PROXY_SETTINGS}
            proxy_pass http://127.0.0.1:9;
            error_page 502 = /nolog_target/?id=$arg_id;
        }
        location /nolog_target/ {${PROXY_SETTINGS}
            proxy_pass http://backend;
        }`,
    });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog([/connect\(\) failed \(111: Connection refused\)/]));

  it("a later request on the same keep-alive connection is still held while paused (not taken for a redirect)", async () => {
    // README: "a log() missing there would leave the request counted in flight" (documented);
    // INTERFACE/README: "POST .../pause: hold new requests". The next request is a new request.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await request(node.url("/nolog/?id=n1"), agent);
      assert.equal(first.status, 200);
      const leaked = (await node.status()).in_flight;
      await node.control("pause", "ttl=0");
      await node.resetBackend();
      const second = request(node.url("/?id=n2"), agent, { timeoutMs: 8000 });
      const r = await Promise.race([second, sleep(1500).then(() => null)]);
      const arrived = (await node.arrivals()).ids;
      await node.control("resume");
      const released = await second;
      assert.ok(r === null && !arrived.includes("n2"), `the next request on the connection was forwarded while paused (status ${r?.status}, arrivals ${arrived}, in_flight after the miswired one: ${leaked})`);
      // held, not lost: the resume releases it (max_hold is 10 s; the client waits 8 s)
      assert.equal(released.status, 200, `n2 after the resume: ${released.status} ${released.error ?? ""}`);
      assert.ok((await node.arrivals()).ids.includes("n2"), "n2 reached the upstream after the resume");
    } finally {
      agent.destroy();
    }
  });
});

// ---------------------------------------------------------------------------------------
// (a) hooks at server level (the README's recommended wiring), and the control locations

describe("round2 (a): hooks at server level, redirects into locations without hooks (4 workers)", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({
      workers: 4,
      hooks: "server",
      setup: { release_window: 2, max_hold: 15 },
      extraLocations: `
        location /s-epn/ {${PROXY_SETTINGS}
            proxy_intercept_errors on;
            proxy_pass http://backend;
            error_page 502 = @s_target;
        }
        location @s_target {${PROXY_SETTINGS}
            proxy_pass http://backend/target?id=$arg_id;
        }
        location /s-epu/ {
            proxy_pass http://127.0.0.1:9;
            error_page 502 =200 /s50x.html;
        }
        location = /s50x.html { return 200 "sorry\\n"; }
        location /s-tf/ { try_files /nonexistent @s_target; }
        location /s-own-log/ {${PROXY_SETTINGS}
            proxy_pass http://backend;
            log_by_lua_block { local _ = ngx.var.status; require("intermission").log() }
        }`,
    });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog([/connect\(\) failed \(111: Connection refused\)/]));

  it("the first control request ever, a pause with drain, does not wait for itself", async () => {
    // README: "Hooks at server level for access() too work: the control location learns its
    // own path the first time it answers and is never held." Drain waits for in-flight requests;
    // the control request itself is not one of the site's requests.
    const { j, ms } = await pauseDrain(node, 2);
    await node.control("resume");
    assert.equal(j.drained, true, `first drain: ${JSON.stringify(j)} after ${Math.round(ms)} ms`);
    assert.equal(j.in_flight, 0);
  });

  it("status in_flight is 0 while idle on every worker (status does not count itself)", async () => {
    // README: "in_flight (passed to the upstream and not finished, this node)"; "Zero is exact".
    const seen: number[] = [];
    for (let i = 0; i < 16; i++) seen.push((await node.status()).in_flight);
    assert.deepEqual(seen, seen.map(() => 0));
  });

  it("every control location (two of them, any worker) answers while its scope is paused", async () => {
    // README: "the control location learns its own path the first time it answers and is never held".
    assert.equal((await get(node.url("/_intermission_other/status"))).status, 200);
    assert.equal((await node.control("pause", "scope=other&ttl=0")).status, 200);
    assert.equal((await node.control("pause", "ttl=0")).status, 200);
    const results: number[] = [];
    try {
      for (let i = 0; i < 12; i++) {
        const a = await get(node.url("/_intermission_other/status"), { timeoutMs: 2000 }).then((r) => r.status, () => -1);
        const b = await get(node.url("/_intermission/status"), { timeoutMs: 2000 }).then((r) => r.status, () => -1);
        results.push(a, b);
      }
    } finally {
      await node.control("resume", "scope=other");
      await node.control("resume");
    }
    assert.deepEqual(results, results.map(() => 200), "-1: held (no answer within 2 s)");
  });

  for (const [name, path] of [
    ["error_page named (upstream 502 intercepted)", (id: string) => `/s-epn/?id=${id}&status=502&delay=0.05`],
    ["error_page to a static URI after a refused connection", (id: string) => `/s-epu/?id=${id}`],
    ["try_files to a named location", (id: string) => `/s-tf/?id=${id}&delay=0.05`],
    ["a location with its own log_by_lua calling log()", (id: string) => `/s-own-log/?id=${id}&delay=0.05`],
  ] as const) {
    it(`${name}: running and paused, in_flight exactly 0, held once, idle`, async () => {
      // README: server-level "log() and header_filter() ... run in whatever location a request ends in".
      const run = await Promise.all(ids("sr", 40).map((id) => get(node.url(path(id)))));
      assert.deepEqual(run.map((r) => r.status), run.map(() => 200));
      await inFlightZero(node);
      const before = (await node.status()).counters;
      await node.control("pause", "ttl=0");
      const pending = await holdInOrder(node, ids("sh", 4).map(path));
      await node.control("resume");
      const replies = await Promise.all(pending.map((p) => p.reply));
      assert.deepEqual(replies.map((r) => r.status), replies.map(() => 200));
      const s = await assertIdle(node);
      assert.equal(s.counters.held - before.held, 4);
      assertBalanced(s);
      await assertDrainsAtOnce(node);
    });
  }
});

// ---------------------------------------------------------------------------------------
// (b) drain across workers

describe("round2 (b): drain never says drained while a request is at the upstream (4 workers)", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ workers: 4, setup: { max_hold: 30, release_window: 8 } });
  });
  after(async () => node?.stop());
  afterEach(async () => {
    await node.control("resume");
    await node.assertCleanLog();
  });

  it("12 requests at the upstream across workers: the drain answers only after every one finished", async () => {
    // INTERFACE: "drain (seconds to wait for in-flight requests to finish before answering;
    // the answer says drained and in_flight)".
    await node.resetBackend();
    const pending = ids("d", 12).map((id) => node.send(`/?id=${id}&delay=1.5`));
    await waitFor("12 at the upstream", async () => (await backendActive(node)) === 12);
    const { j } = await pauseDrain(node, 10);
    const active = await backendActive(node);
    assert.equal(j.drained, true, JSON.stringify(j));
    assert.equal(active, 0, `drained:true while ${active} still at the upstream`);
    for (const p of pending) assert.equal((await p.reply).status, 200);
  });

  it("requests sent in the same instant as the pause: each is either held or waited for", async () => {
    // README: "pause?drain= waits for in-flight requests"; "Paused, each request takes a ticket".
    for (let trial = 0; trial < 6; trial++) {
      await node.resetBackend();
      const pending = ids(`j${trial}-`, 6).map((id) => node.send(`/?id=${id}&delay=0.8`));
      const { j } = await pauseDrain(node, 8, "ttl=0");
      const active = await backendActive(node);
      assert.equal(j.drained, true, `trial ${trial}: ${JSON.stringify(j)}`);
      assert.equal(active, 0, `trial ${trial}: drained:true while ${active} still at the upstream`);
      await node.control("resume");
      for (const p of pending) assert.equal((await p.reply).status, 200);
    }
    await inFlightZero(node);
  });

  it("a long request right after a worker's count fell to zero is still waited for (keep-alive, same worker)", async () => {
    // README: "a worker publishes its count the moment it reaches 0 or 1"; zero is exact.
    for (let trial = 0; trial < 8; trial++) {
      await node.resetBackend();
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      try {
        assert.equal((await request(node.url(`/?id=k${trial}a`), agent)).status, 200);
        const long = request(node.url(`/?id=k${trial}b&delay=1.2`), agent);
        await waitFor("the long one at the upstream", async () => (await backendActive(node)) === 1);
        const { j, ms } = await pauseDrain(node, 5, "ttl=0");
        const active = await backendActive(node);
        await node.control("resume");
        assert.ok(!(j.drained === true && active > 0), `trial ${trial}: drained:true after ${Math.round(ms)} ms while the long request was at the upstream: ${JSON.stringify(j)}`);
        assert.equal(j.drained, true);
        assert.equal((await long).status, 200);
      } finally {
        agent.destroy();
      }
    }
  });

  it("a burst of short requests across workers, then one long one: drain waits for it", async () => {
    for (let trial = 0; trial < 6; trial++) {
      await node.resetBackend();
      await Promise.all(ids(`b${trial}-`, 20).map((id) => get(node.url(`/?id=${id}`))));
      const long = node.send(`/?id=b${trial}-long&delay=1`);
      await waitFor("the long one at the upstream", async () => (await backendActive(node)) === 1);
      const { j } = await pauseDrain(node, 5, "ttl=0");
      const active = await backendActive(node);
      await node.control("resume");
      assert.equal(active, 0, `trial ${trial}: drained=${j.drained} answered while the long request was at the upstream`);
      assert.equal(j.drained, true);
      assert.equal((await long.reply).status, 200);
    }
  });

  it("long polls and a stream: drain=0.5 says not drained; clients abort mid-response; in_flight returns to 0", async () => {
    // README: "Long-lived requests (WebSockets, long polls) count too, so a drain waits for them".
    await node.resetBackend();
    const poll = node.send("/?id=poll&delay=8");
    const stream = node.send("/?id=sse&stream=8");
    poll.reply.catch(() => undefined);
    stream.reply.catch(() => undefined);
    await waitFor("both at the upstream", async () => (await backendActive(node)) === 2);
    const { j } = await pauseDrain(node, 0.5, "ttl=0");
    assert.equal(j.drained, false, JSON.stringify(j));
    assert.ok(j.in_flight >= 1, JSON.stringify(j));
    // Clients give up: the poll before any byte, the stream after its first chunk.
    poll.abort();
    stream.abort();
    await inFlightZero(node, 4000);
    const second = await pauseDrain(node, 2);
    assert.equal(second.j.drained, true, JSON.stringify(second.j));
    assert.equal(second.j.in_flight, 0);
    await node.control("resume");
    await inFlightZero(node);
  });

  it("clients that abort while held, released, and at the upstream: in_flight never negative, exactly 0 after", async () => {
    // README: "Client gone ... leaves the queue at once and never reaches the upstream".
    await node.resetBackend();
    const inflight = ids("ab-f", 6).map((id) => node.send(`/?id=${id}&delay=3`));
    await waitFor("at the upstream", async () => (await backendActive(node)) === 6);
    await node.control("pause", "ttl=0");
    const held = ids("ab-h", 6).map((id) => node.send(`/?id=${id}&delay=3`));
    await node.held(6);
    for (const p of [...inflight, ...held.slice(0, 3)]) {
      p.reply.catch(() => undefined);
      p.abort();
    }
    await node.held(3);
    await node.control("resume");
    // (The backend's own "active" count is useless here: lua_check_client_abort, http-wide,
    // kills its handler when the front gives up, so it never counts down. Use its arrivals.)
    await waitFor("released at the upstream", async () => {
      const arrived = (await node.arrivals()).ids;
      return ids("ab-h", 6).slice(3).every((id) => arrived.includes(id));
    });
    for (const p of held.slice(3)) {
      p.reply.catch(() => undefined);
      p.abort();
    }
    await inFlightZero(node, 5000);
    const seen: number[] = [];
    for (let i = 0; i < 8; i++) seen.push((await node.status()).in_flight);
    assert.deepEqual(seen, seen.map(() => 0), "never negative, never stale");
    await assertIdle(node);
    assertBalanced(await node.status());
    await assertDrainsAtOnce(node);
  });
});

// ---------------------------------------------------------------------------------------
// (c) hundreds in flight in one worker

describe("round2 (c): hundreds in flight in one worker, with redirects between the two access() calls", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({
      workers: 1,
      setup: { max_hold: 30, release_window: 64 },
      extraLocations: `
        location /ho/ {${HOOKS}${PROXY_SETTINGS}
            proxy_intercept_errors on;
            proxy_pass http://backend;
            error_page 502 = @ho_target;
        }
        location @ho_target {${HOOKS}${PROXY_SETTINGS}
            proxy_pass http://backend/t?id=$arg_id&delay=$arg_delay2;
        }`,
    });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("600 in flight (random delays, half through an error_page redirect), then pause, hold, resume: every one 200, in_flight exactly 0", async () => {
    // README: "log() finds that record and undoes exactly what access() did, once, even
    // across internal redirects"; "Zero is exact, which is what drain needs".
    const rnd = () => (0.5 + Math.random() * 1.5).toFixed(2);
    const pending = ids("c", 600).map((id, i) =>
      i % 2 ? node.send(`/?id=${id}&delay=${rnd()}`) : node.send(`/ho/?id=${id}&status=502&delay=${rnd()}&delay2=${rnd()}`),
    );
    await waitFor("hundreds in flight", async () => (await node.status()).in_flight >= 300, 20_000);
    await node.control("pause", "ttl=0");
    const held = ids("ch", 40).map((id, i) => node.send(i % 2 ? `/?id=${id}` : `/ho/?id=${id}&status=502&delay2=0.1`));
    await node.held(40);
    const mid = await pauseDrain(node, 0.2);
    assert.equal(mid.j.drained, false, "hundreds still in flight");
    await node.control("resume");
    const replies = await Promise.all([...pending, ...held].map((p) => p.reply));
    const bad = replies.filter((r) => r.status !== 200);
    assert.equal(bad.length, 0, `not 200: ${bad.map((r) => r.status)}`);
    await inFlightZero(node, 8000);
    const s = await assertIdle(node);
    assertBalanced(s);
    await assertDrainsAtOnce(node);
  });

  it("a drain with 400 in flight in the one worker answers only when the upstream is empty", async () => {
    await node.resetBackend();
    const pending = ids("e", 400).map((id) => node.send(`/?id=${id}&delay=${(1 + Math.random() * 1.5).toFixed(2)}`));
    await waitFor("hundreds at the upstream", async () => (await backendActive(node)) >= 300, 20_000);
    const { j } = await pauseDrain(node, 15, "ttl=0");
    const active = await backendActive(node);
    await node.control("resume");
    assert.equal(j.drained, true, JSON.stringify(j));
    assert.equal(active, 0, `drained:true with ${active} at the upstream`);
    for (const p of pending) assert.equal((await p.reply).status, 200);
  });
});

// ---------------------------------------------------------------------------------------
// (d) reloads mid-pause and mid-drain

describe("round2 (d): nginx -s reload mid-pause and mid-drain (2 workers, window 1)", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ workers: 2, setup: { max_hold: 30, release_window: 1 } });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("held by old and new workers: released once each, in arrival order across the reload", async () => {
    // README: "nginx -s reload during a pause loses nothing ... requests held by the old
    // workers are released on resume exactly once, and the new workers hold new requests";
    // "order across workers: strict (node-wide tickets)"; "release_window = 1 makes the upstream order exact".
    await node.resetBackend();
    await node.control("pause", "ttl=0");
    const old = await holdInOrder(node, ids("old", 4).map((id) => `/?id=${id}&delay=0.1`));
    await node.reload();
    await waitFor("the new generation", async () => (await node.shuttingDownWorkers()) > 0);
    const fresh = await holdInOrder(node, ids("new", 3).map((id) => `/?id=${id}&delay=0.1`));
    await node.control("resume");
    const replies = await Promise.all([...old, ...fresh].map((p) => p.reply));
    assert.deepEqual(replies.map((r) => r.status), replies.map(() => 200));
    assert.deepEqual((await node.arrivals()).ids, [...ids("old", 4), ...ids("new", 3)]);
    await waitFor("the old workers to exit", async () => (await node.shuttingDownWorkers()) === 0, 8000);
    await assertIdle(node);
    assertBalanced(await node.status());
  });

  it("a drain started on the new workers still waits for a request at the upstream in an old worker", async () => {
    // README: "in_flight counts every request on the node between access() and log()";
    // drain "waits for in-flight requests to finish before answering".
    await node.resetBackend();
    const long = node.send("/?id=old-long&delay=3");
    await waitFor("at the upstream", async () => (await backendActive(node)) === 1);
    await node.reload();
    await waitFor("the old worker shutting down", async () => (await node.shuttingDownWorkers()) > 0);
    const results: { drained: boolean; active: number }[] = [];
    // Several drains on fresh connections, so at least one lands on a new worker.
    for (let i = 0; i < 3; i++) {
      const { j } = await pauseDrain(node, 0.3, "ttl=0");
      results.push({ drained: j.drained, active: await backendActive(node) });
    }
    const { j } = await pauseDrain(node, 8, "ttl=0");
    const active = await backendActive(node);
    await node.control("resume");
    assert.equal((await long.reply).status, 200);
    assert.ok(results.every((r) => !(r.drained && r.active > 0)), `drained:true while the old worker's request was at the upstream: ${JSON.stringify(results)}`);
    assert.equal(j.drained, true);
    assert.equal(active, 0, `drained with ${active} at the upstream`);
    await inFlightZero(node);
  });

  it("a reload while a pause's drain is waiting: the drain answers honestly, the pause holds", async () => {
    await node.resetBackend();
    const long = node.send("/?id=mid-drain&delay=2");
    await waitFor("at the upstream", async () => (await backendActive(node)) === 1);
    const drain = pauseDrain(node, 8, "ttl=0");
    await waitFor("the pause applied", async () => (await node.status()).state === "paused");
    await node.reload();
    const newcomer = node.send("/?id=newcomer");
    await node.held(1);
    const { j } = await drain;
    const active = await backendActive(node);
    assert.equal(j.drained, true, JSON.stringify(j));
    assert.equal(active, 0);
    assert.ok(!(await node.arrivals()).ids.includes("newcomer"), "forwarded while paused");
    await node.control("resume");
    assert.equal((await long.reply).status, 200);
    assert.equal((await newcomer.reply).status, 200);
    await waitFor("the old workers to exit", async () => (await node.shuttingDownWorkers()) === 0, 8000);
    await assertIdle(node);
  });

  it("reload in the middle of the release: order exact, window 1, each once", async () => {
    await node.resetBackend();
    await node.control("pause", "ttl=0");
    const pending = await holdInOrder(node, ids("rr", 8).map((id) => `/?id=${id}&delay=0.25`));
    await node.control("resume");
    await waitFor("the release under way", async () => (await node.arrivals()).ids.length >= 2);
    await node.reload();
    await node.control("pause", "ttl=0");
    await node.reload();
    await node.control("resume");
    const replies = await Promise.all(pending.map((p) => p.reply));
    assert.deepEqual(replies.map((r) => r.status), replies.map(() => 200));
    const arr = await node.arrivals();
    assert.deepEqual(arr.ids, ids("rr", 8));
    assert.ok(Math.max(...arr.concurrency) <= 1, `window 1: ${arr.concurrency}`);
    await waitFor("the old workers to exit", async () => (await node.shuttingDownWorkers()) === 0, 10_000);
    await assertIdle(node);
  });
});

describe("round2 (d): reload with worker_shutdown_timeout mid-release and mid-drain", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ workers: 2, mainDirectives: "worker_shutdown_timeout 1s;", setup: { max_hold: 30, release_window: 1 } });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog([/upstream prematurely closed connection/, /Connection reset by peer\) while reading response header from upstream/]));

  it("cut off while the backlog drains: leases, held and in_flight come back; the next pause releases at once", async () => {
    // README: "With worker_shutdown_timeout, the requests an old worker still holds when it
    // runs out are cut off by nginx; their log() gives their places back at once".
    await node.resetBackend();
    await node.control("pause", "ttl=0");
    const pending = await holdInOrder(node, ids("w", 6).map((id) => `/?id=${id}&delay=3`));
    for (const p of pending) p.reply.catch(() => undefined);
    await node.control("resume");
    await waitFor("one released at the upstream", async () => (await backendActive(node)) === 1);
    await node.reload();
    await waitFor("the old workers to exit", async () => (await node.shuttingDownWorkers()) === 0, 8000);
    let last: any;
    await waitFor("idle after the cut", async () => {
      last = await node.status();
      return last.held === 0 && last.queued === 0 && last.release.leases === 0 && last.in_flight === 0 && last.draining === false;
    }, 5000).catch(() => assert.fail(`not idle after the cut: ${JSON.stringify({ held: last.held, queued: last.queued, release: last.release, in_flight: last.in_flight, draining: last.draining })}`));
    await node.resetBackend();
    await node.control("pause", "ttl=0");
    const fresh = await holdInOrder(node, ["/?id=f1", "/?id=f2"]);
    const t0 = Date.now();
    await node.control("resume");
    for (const p of fresh) assert.equal((await p.reply).status, 200);
    assert.ok(Date.now() - t0 < 3000, `the fresh ones waited ${Date.now() - t0} ms behind dead tickets`);
    assertBalanced(await node.status());
  });

  it("a drain waiting on a request that the shutdown timeout cuts: drained, not the full bound", async () => {
    await node.resetBackend();
    const long = node.send("/?id=cut&delay=20");
    long.reply.catch(() => undefined);
    await waitFor("at the upstream", async () => (await backendActive(node)) === 1);
    await node.reload();
    // The old workers stop accepting once they show "shutting down": the drain goes to a new one.
    await waitFor("the old worker shutting down", async () => (await node.shuttingDownWorkers()) > 0);
    const { j, ms } = await pauseDrain(node, 10, "ttl=0");
    await node.control("resume");
    assert.equal(j.drained, true, JSON.stringify(j));
    assert.ok(ms < 6000, `the drain waited ${Math.round(ms)} ms for a request cut after 1 s`);
    await inFlightZero(node);
  });
});

// ---------------------------------------------------------------------------------------
// (e) control flapping under steady load

for (const window of [1, 2]) {
  describe(`round2 (e): pause/resume back to back under steady load, release_window ${window}`, () => {
    let node: NginxNode;
    before(async () => {
      node = await NginxNode.start({ workers: 2, setup: { max_hold: 10, release_window: window, pause_ttl: 0 } });
    });
    after(async () => node?.stop());
    afterEach(async () => node.assertCleanLog());

    it("resume right after pause, pause right after resume: zero failed, nothing forwarded while held, idle after", async () => {
      // README: "Your users see one slow request and nothing else"; INTERFACE: "max_hold:
      // seconds one request may be held"; "held + retried = released + ...".
      const CONNS = 6;
      const load = steadyLoad(node.base, CONNS, (id) => `/?id=${id}&delay=0.02`);
      const violations: string[] = [];
      try {
        await waitFor("load running", async () => load.replies.length > 20);
        for (let cycle = 0; cycle < 12; cycle++) {
          // Resume immediately after a pause.
          await node.control("pause");
          await node.control("resume");
          // Pause immediately after a resume, then check that a full pause holds.
          await node.control("pause");
          await node.control("resume");
          await node.control("pause");
          await waitFor(`all ${CONNS} connections held`, async () => (await node.status()).held === CONNS, 5000);
          const a = (await node.arrivals()).ids.length;
          await sleep(150); // time must pass to see that nothing moves while all are held
          const s = await node.status();
          const b = (await node.arrivals()).ids.length;
          if (b !== a || s.held !== CONNS) violations.push(`cycle ${cycle}: arrivals ${a} -> ${b}, held ${s.held}`);
          await node.control("resume");
        }
      } finally {
        await node.control("resume");
        await load.stop();
      }
      const failed = load.replies.filter((r) => r.status !== 200);
      assert.deepEqual(violations, [], "forwarded while paused");
      assert.equal(failed.length, 0, `failed: ${JSON.stringify(failed.slice(0, 5))}`);
      const slow = load.replies.filter((r) => r.ms > 5000);
      assert.equal(slow.length, 0, `held far longer than any pause: ${JSON.stringify(slow.slice(0, 5))}`);
      const s = await assertIdle(node);
      assertBalanced(s);
      await assertDrainsAtOnce(node);
    });

    it("40 flaps with no wait at all: every request answered 200, counters balance, idle", async () => {
      const load = steadyLoad(node.base, 8, (id) => `/?id=${id}&delay=0.01`);
      try {
        await waitFor("load running", async () => load.replies.length > 20);
        for (let i = 0; i < 40; i++) await node.control(i % 2 ? "resume" : "pause");
        await node.control("resume");
      } finally {
        await node.control("resume");
        await load.stop();
      }
      const failed = load.replies.filter((r) => r.status !== 200);
      assert.equal(failed.length, 0, `failed: ${JSON.stringify(failed.slice(0, 5))}`);
      const s = await assertIdle(node);
      assertBalanced(s);
    });
  });
}

// ---------------------------------------------------------------------------------------
// (f) the retry lane, with an application that refuses connections after the resume

const app = new TestApp({
  name: "app2",
  listen: "8082",
  dict: "app2 4m",
  server: `
        location = /app2-arrivals {
            content_by_lua_block {
                local d = ngx.shared.app2
                local out = {}
                for i = 1, (d:get("n") or 0) do out[#out + 1] = d:get("a" .. i) end
                ngx.say(table.concat(out, ","))
            }
        }
        location / {
            client_max_body_size 10m;
            content_by_lua_block {${READ_BODY_LUA}
                local d = ngx.shared.app2
                local n = d:incr("n", 1, 0)
                d:set("a" .. n, ngx.var.arg_id or "-")
                ngx.say("app2 ", ngx.var.arg_id or "-", " ", ngx.req.get_method(), " ", #body, " ", ngx.md5(body))
            }
        }`,
});

describe("round2 (f): retry lane, the application refuses connections right after the resume", () => {
  let node: NginxNode;
  const startApp = () => app.start(node);
  const stopApp = () => app.stop(node);

  before(async () => {
    node = await NginxNode.start({
      workers: 2,
      // outage_hold off: this suite is about released requests; a never-held request held
      // through an unplanned outage (the default) is unplanned-outage.test.ts's.
      setup: { max_hold: 30, release_window: 1, outage_hold: 0 },
      files: [app.file()],
      // The README's wiring: log and header_filter at server level, access in the location.
      serverDirectives: `
        header_filter_by_lua_block { require("intermission").header_filter() }
        log_by_lua_block           { require("intermission").log() }`,
      extraLocations: `
        location /app/ {
            access_by_lua_block { require("intermission").access() }
            client_max_body_size 10m;${PROXY_SETTINGS}
            proxy_pass http://127.0.0.1:8082;${RETRY_ON_ERROR}
        }${retryLocation()}
        location = /app-arrivals { proxy_pass http://127.0.0.1:8082/app2-arrivals; }`,
    });
  });
  after(async () => {
    await stopApp().catch(() => undefined);
    await node?.stop();
  });
  afterEach(async () => {
    await stopApp();
    await node.assertCleanLog([/connect\(\) failed \(111: Connection refused\)/]);
  });

  const arrivalsAtApp = async () => (await get(node.url("/app-arrivals"))).body.trim().split(",").filter(Boolean);

  it("outage_hold = 0: a never-held request meeting the closed port is a plain 502, and leaves in_flight at 0", async () => {
    // README: "with `outage_hold = 0` they are not retried: a 502 then is yours".
    const r = await get(node.url("/app/?id=plain"));
    assert.equal(r.status, 502);
    await inFlightZero(node);
    await assertDrainsAtOnce(node);
  });

  it("held GETs and POSTs (one with a 64 KiB body), app up 1.5 s after the resume: all 200, each once, in order, bodies intact", async () => {
    // README: "a released request whose upstream connection failed before a byte was sent
    // ... goes back to the head of the queue and is sent again, POSTs too, within its own max_hold".
    const before = (await node.status()).counters;
    await node.control("pause", "ttl=0");
    const big = "x".repeat(65536);
    const pending: Promise<{ status: number; body: string }>[] = [];
    const order: string[] = [];
    for (let i = 1; i <= 6; i++) {
      const id = `p${i}`;
      order.push(id);
      pending.push(request(node.url(`/app/?id=${id}`), false, i % 2 ? {} : { method: "POST", body: i === 2 ? big : `body-${id}` }));
      await node.held(i);
    }
    await node.control("resume");
    await waitFor("a retry", async () => (await node.status()).counters.retried > 0);
    await sleep(1500); // the application's downtime: time must pass
    await startApp();
    const replies = await Promise.all(pending);
    assert.deepEqual(replies.map((r) => r.status), replies.map(() => 200), replies.map((r) => `${r.status} ${r.body.slice(0, 80)}`).join(" | "));
    assert.match(replies[1].body, /POST 65536 /, "the big body arrived whole");
    assert.deepEqual(await arrivalsAtApp(), order, "each once, in hold order");
    const s = await assertIdle(node);
    assert.ok(s.counters.retried - before.retried >= 1);
    assertBalanced(s);
  });

  it("the application stays down 12 s after the resume (more tries than nginx's 10 internal redirects allow): still no 500, all 200 within max_hold", async () => {
    // README: "Each try costs two of nginx's ten internal redirects per request, and the
    // request's own max_hold bounds them; then on_timeout applies"; "intermission never turns
    // a request into a 500"; max_hold is 30 s here.
    const retriedBefore = (await node.status()).counters.retried;
    await node.control("pause", "ttl=0");
    const pending = await holdInOrder(node, ids("/app/?id=long", 3));
    await node.control("resume");
    await waitFor("a retry", async () => (await node.status()).counters.retried > 0);
    await sleep(12_000); // the application's downtime (back-off caps at 2 s: 6+ tries): time must pass
    await startApp();
    const replies = await Promise.all(pending.map((p) => p.reply.catch((e) => ({ status: -1, body: String(e) }) as unknown as Reply)));
    const s = await node.status();
    const log = (await node.errorLog()).split("\n");
    const why = log.filter((l) => /cycle/.test(l)).slice(-3).join("\n");
    const tries = ids("long", 3).map((id) => `${id}: ${log.filter((l) => l.includes("lane=retry") && l.includes("outcome=") && l.includes(`id=${id}`)).length}`);
    console.log(`# retries per request (leave lines in the retry lane): ${tries.join(", ")}`);
    assert.deepEqual(replies.map((r) => r.status), replies.map(() => 200), `statuses ${replies.map((r) => r.status)}; retried ${s.counters.retried}; ${replies.map((r) => r.body.slice(0, 60)).join(" | ")}\nerror.log:\n${why}`);
 
    // README: "the release waits until the address that failed accepts a TCP connection
    // again": the tries are not spent on the closed port (before, 15 tries for 3 requests).
    // Window 1: only long1 is sent before the port closes the release, and the whole release
    // waits with its retry, so it is the one retry.
    const retried = s.counters.retried - retriedBefore;
    assert.equal(retried, 1, `retried ${retried} times: the tries went to a closed port (${tries.join(", ")})`);
    assert.ok(log.some((l) => /upstream \S+ for scope default accepts connections again after/.test(l)), "the connect probe says when the port opened");
    const order = (await arrivalsAtApp()).filter((id) => id.startsWith("long"));
    assert.deepEqual(order, ids("long", 3), "in hold order");
  });

  it("pause again right after the resume while the app refuses: nothing reaches the app while paused, then all 200", async () => {
    // README: "nothing forwarded while paused" (a retried request is held again at the head of the queue).
    await node.control("pause", "ttl=0");
    const pending = await holdInOrder(node, ids("/app/?id=rp", 3));
    await node.control("resume");
    await waitFor("a retry", async () => (await node.status()).counters.retried > 0);
    await node.control("pause", "ttl=0");
    await startApp();
    await sleep(1000); // paused, app up: time must pass to see that nothing is sent
    const during = await arrivalsAtApp();
    await node.control("resume");
    const replies = await Promise.all(pending.map((p) => p.reply));
    assert.deepEqual(during.filter((id) => id.startsWith("rp")), [], `reached the app while paused: ${during}`);
    assert.deepEqual(replies.map((r) => r.status), [200, 200, 200]);
    await assertIdle(node);
    assertBalanced(await node.status());
  });
});
