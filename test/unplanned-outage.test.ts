// Unplanned outages (README "Unplanned outages"): nobody pauses, the application stops
// accepting connections for a while. With outage_hold on, a request that was never held
// and whose connection failed before a byte was sent is held, its scope enters "outage",
// new requests are held at once behind one prober, and the backlog is released when the
// application accepts again; past outage_hold requests are answered 503 at once. Without
// it (outage_hold = 0) those requests get nginx's 502.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { NginxNode } from "./harness/node.ts";
import { get, send, waitFor, Reply } from "./harness/http.ts";
import { RETRY_ON_ERROR, retryLocation, serverHooks } from "./harness/nginx-config.ts";
import { TestApp, AppSpec, APPLIED_LOG_FORMAT, READ_BODY_LUA } from "./harness/app.ts";

/** The application on 127.0.0.1:8082: counts each arrival per ?id= and records its body's size and md5. */
const APP: AppSpec = {
  name: "outage-app",
  listen: "127.0.0.1:8082",
  dict: "rec 8m",
  http: APPLIED_LOG_FORMAT,
  stopSignal: "quit",
  server: `
        client_max_body_size 20m;
        location = /_rec {
            content_by_lua_block {
                local d = ngx.shared.rec
                local id = ngx.var.arg_id
                ngx.say(require("cjson.safe").encode({ total = d:get("n") or 0, count = id and (d:get("c" .. id) or 0), body = id and d:get("b" .. id) }))
            }
        }
        location = /_rec_reset { content_by_lua_block { ngx.shared.rec:flush_all() ngx.say("reset") } }
        # The application's own gateway error: bytes were sent, so never held nor sent again.
        location /app/bad502 {
            content_by_lua_block {
                local d = ngx.shared.rec
                d:incr("n", 1, 0)
                d:incr("c" .. (ngx.var.arg_id or "-"), 1, 0)
                ngx.status = 502
                ngx.say("the application's own 502")
            }
        }
        # "Not applied": the first ?fails= arrivals of an id answer X-Accel-Redirect to the
        # retry location (the README's middleware does it when it has no database connection).
        location /app/notapplied {
            content_by_lua_block {
                ngx.req.read_body()
                local d = ngx.shared.rec
                local id = ngx.var.arg_id or "-"
                local n = d:incr("c" .. id, 1, 0)
                if n <= tonumber(ngx.var.arg_fails or "0") then
                    ngx.header["X-Accel-Redirect"] = "@intermission_retry"
                    ngx.say("not applied")
                    return
                end
                local body = ngx.req.get_body_data() or ""
                d:incr("n", 1, 0)
                d:set("b" .. id, ngx.req.get_method() .. " " .. #body .. " " .. ngx.md5(body))
                ngx.say("applied on arrival ", n)
            }
        }
        # The application's ordinary error page: passes unchanged.
        location /app/error500 {
            content_by_lua_block {
                ngx.header["X-App"] = "own page"
                ngx.status = 500
                ngx.say("the application's own 500 page")
            }
        }
        location / {
            # Every request applied, across restarts (the shared dict starts afresh).
            access_log /tmp/outage-app-applied.log ids;
            content_by_lua_block {${READ_BODY_LUA}
                local d = ngx.shared.rec
                local id = ngx.var.arg_id or "-"
                d:incr("n", 1, 0)
                d:incr("c" .. id, 1, 0)
                d:set("b" .. id, #body .. " " .. ngx.md5(body))
                ngx.say("app ", ngx.req.get_method(), " ", #body)
            }
        }`,
};

/** The README's wiring, in a location of its own scope. */
const LOCATIONS = `
        location /app/ {
            set $intermission_scope app;
            access_by_lua_block { require("intermission").access() }
            client_max_body_size 20m;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://127.0.0.1:8082;${RETRY_ON_ERROR}
        }
        # A site that serves its own error pages for the upstream's errors: the application's
        # own 502 reaches the retry location too, with bytes sent.
        location /intercept/ {
            set $intermission_scope app;
            access_by_lua_block { require("intermission").access() }
            proxy_intercept_errors on;
            proxy_pass http://127.0.0.1:8082/app/;${RETRY_ON_ERROR}
        }
        # The body streamed to the upstream as it arrives: not held whole, never re-sent.
        location /nobuf/ {
            set $intermission_scope app;
            access_by_lua_block { require("intermission").access() }
            client_max_body_size 20m;
            proxy_request_buffering off;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://127.0.0.1:8082;${RETRY_ON_ERROR}
        }${retryLocation()}`;

/** nginx's own connect() failure line of a request's try (the prober's are not logged: it counts them in probe_failures). */
const REQUEST_CONNECT = /\[error\].*connect\(\) failed \(111: Connection refused\) while connecting to upstream/;
/** nginx's line for a request written into a connection the stopping application never accepted (test 1 counts them). */
const RESET = /\[error\].*recv\(\) failed \(104: Connection reset by peer\) while reading response header from upstream, .*request: "(GET|POST) \/app\/loop/;

const OUTAGE_HOLD = 3;

async function startNode(outageHold: number): Promise<NginxNode> {
  return NginxNode.start({
    workers: 2,
    setup: { max_hold: 30, outage_hold: outageHold, retry_after: 7 },
    files: [new TestApp(APP).file()],
    serverDirectives: serverHooks(),
    extraLocations: LOCATIONS,
  });
}

/** The application of one node (each node has its own), with what it recorded. */
class App extends TestApp {
  constructor() {
    super(APP);
  }
  /** What it recorded: of all requests, and of ?id= if given. */
  async rec(node: NginxNode, id?: string): Promise<{ total: number; count?: number; body?: string }> {
    return JSON.parse(await this.get(node, `/_rec${id ? `?id=${id}` : ""}`));
  }
  /** Forgets what it recorded and applied. */
  async reset(node: NginxNode): Promise<void> {
    await this.clearApplied(node);
    await this.get(node, "/_rec_reset");
  }
}

/** held + retried = released + timed_out + aborted + maintenance + held now (counters.ts). */
async function assertBalanced(node: NginxNode): Promise<void> {
  const s = await node.status("app");
  const c = s.counters;
  assert.equal(c.held + c.retried, c.released + c.timed_out + c.aborted + c.maintenance + s.held, JSON.stringify(c));
}

/** `loops` clients sending requests one after another until stop(); every reply's status. */
function clientLoops(node: NginxNode, loops: number): { stop(): Promise<number[]> } {
  let running = true;
  const statuses: number[] = [];
  const tasks = Array.from({ length: loops }, async (_, l) => {
    for (let i = 0; running; i++) {
      const post = i % 2 === 1;
      const r = await send(node.url(`/app/loop?id=l${l}-${i}`), post ? { method: "POST", body: `form=${l}-${i}`, headers: { "Content-Type": "application/x-www-form-urlencoded" } } : {}).reply
        .catch(() => ({ status: 0 }) as Reply);
      statuses.push(r.status);
    }
  });
  return { stop: async () => { running = false; await Promise.all(tasks); return statuses; } };
}

const count = (xs: number[], s: number) => xs.filter((x) => x === s).length;

describe("unplanned outages: nobody pauses, the application stops accepting connections", () => {
  let on: NginxNode;
  let off: NginxNode;
  let app: App;
  let offApp: App;

  before(async () => {
    [on, off] = await Promise.all([startNode(OUTAGE_HOLD), startNode(0)]);
    app = new App();
    offApp = new App();
    await Promise.all([app.start(on), offApp.start(off)]);
  });
  after(async () => {
    await Promise.all([on?.stop(), off?.stop()]);
  });
  afterEach(async () => {
    await Promise.all([app.start(on), offApp.start(off)]);
    await waitFor("the outage over", async () => (await on.status("app")).state === "running");
    await assertBalanced(on);
    await on.assertCleanLog([REQUEST_CONNECT, RESET]);
    await off.assertCleanLog([REQUEST_CONNECT, RESET]);
  });

  // First in this node's life: "not applied" must hold a request of a scope that was never
  // stopped (its queue keys are made on the way), not answer it 503 at once.
  it("\"not applied\" (X-Accel-Redirect: @intermission_retry), in a scope never stopped before, is held and sent again, method and body kept; the app's own 500 page passes unchanged", async () => {
    await app.reset(on);
    const before = (await on.status("app")).counters;
    const body = "order=42&qty=1";
    const r = await send(on.url("/app/notapplied?id=na1&fails=1"), { method: "POST", body, headers: { "Content-Type": "application/x-www-form-urlencoded" } }).reply;
    assert.equal(r.status, 200, r.body);
    assert.match(r.body, /applied on arrival 2/);
    const md5 = createHash("md5").update(body).digest("hex");
    assert.deepEqual(await app.rec(on, "na1"), { total: 1, count: 2, body: `POST ${body.length} ${md5}` });
    const after = (await on.status("app")).counters;
    assert.equal(after.retried - before.retried, 1, "held once more");
    assert.equal(after.outages, before.outages, "not an outage: the application is up");
    // Never applicable: every try is spent, then on_timeout's 503.
    const never = await get(on.url("/app/notapplied?id=na2&fails=100"));
    assert.equal(never.status, 503, never.body);
    assert.equal((await app.rec(on, "na2")).count, 3, "sent three times (two retries), no more");
    // The application's ordinary 500 passes as it is.
    const own = await get(on.url("/app/error500"));
    assert.equal(own.status, 500);
    assert.equal(own.body, "the application's own 500 page\n");
    assert.equal(own.headers["x-app"], "own page");
  });

  it("the application restarts under client loops: 0 failed with outage_hold but those in flight at the stop, every 200 applied once; 502s without it", async () => {
    const failures: Record<string, { failed: number; resets: number }> = {};
    for (const [node, a, label] of [[on, app, "on"], [off, offApp, "off"]] as const) {
      await a.reset(node);
      await node.newLogLines();
      const loops = clientLoops(node, 6);
      await waitFor("some requests served", async () => (await a.applied(node)).length >= 20);
      await a.stop(node);
      // The restart's gap: long enough for many requests to meet the closed port.
      await new Promise((r) => setTimeout(r, 1500));
      await a.start(node);
      await waitFor("requests served after the restart", async () => (await a.rec(node)).total >= 20, 5000);
      const statuses = await loops.stop();
      const ok = count(statuses, 200);
      const applied = await a.applied(node);
      // In flight at the stop: written into a connection the stopping application had not
      // accepted yet, reset when it exited. Bytes were sent, so never sent again (the
      // issue's bound: the failures are at most the requests in flight at the stop).
      const resets = (await node.newLogLines()).filter((l) => RESET.test(l)).length;
      failures[label] = { failed: statuses.length - ok, resets };
      if (label === "on") {
        assert.equal(statuses.length - ok, resets, `with outage_hold only those in flight at the stop fail: ${JSON.stringify(statuses.filter((s) => s !== 200))} of ${statuses.length}`);
        assert.equal(applied.length, ok, "requests the application applied = the 200s");
        assert.equal(new Set(applied).size, applied.length, "none applied twice");
      } else {
        assert.ok(count(statuses, 502) > resets, `without outage_hold requests fail at the closed port: ${JSON.stringify(failures)}`);
      }
    }
    const s = await on.status("app");
    assert.ok(s.counters.outages >= 1 && s.counters.outage_held >= 1, JSON.stringify(s.counters));
    const log = await on.errorLog();
    assert.match(log, /audit action=outage-start scope=app upstream=127\.0\.0\.1:8082/, "the outage's start in the audit log");
    assert.match(log, /audit action=outage-end scope=app .*seconds=/, "the outage's end in the audit log");
    // Metrics: the outage counted, its duration observed.
    const metrics = (await on.get("/_intermission/metrics?scope=app")).body;
    assert.match(metrics, /intermission_state\{scope="app",state="outage"\} 0/);
    assert.match(metrics, /intermission_requests_total\{scope="app",outcome="outages"\} [1-9]/);
    const outages = Number(/intermission_outage_duration_seconds_count\{scope="app"\} (\d+)/.exec(metrics)?.[1]);
    assert.equal(outages, s.counters.outages, metrics.split("\n").filter((l) => /outage/.test(l)).join("\n"));
    assert.ok(Number(/intermission_outage_duration_seconds_sum\{scope="app"\} ([\d.]+)/.exec(metrics)?.[1]) >= 1, "the outages lasted a second or more");
    console.log(`# failed requests (of which in flight at the stop): ${JSON.stringify(failures)}`);
  });

  it("down for good: held requests get 503 after outage_hold, new ones at once, the upstream is tried at the prober's rate, and the site flows within a second of its return", async () => {
    await on.newLogLines();
    const probesBefore = (await on.status("app")).counters.probe_failures;
    await app.stop(on);
    const started = Date.now();
    const first = send(on.url("/app/first?id=f0"));
    await waitFor("the outage", async () => (await on.status("app")).state === "outage");
    const s = await on.status("app");
    assert.equal(s.outage.upstream, "127.0.0.1:8082");
    assert.ok(s.outage.seconds >= 0 && s.outage.fail_fast === false, JSON.stringify(s.outage));
    // Held at once without trying the upstream.
    const more = Array.from({ length: 8 }, (_, i) => send(on.url(`/app/more?id=m${i}`)));
    await waitFor("9 held", async () => (await on.status("app")).held === 9);
    const replies = await Promise.all([first, ...more].map((p) => p.reply));
    const waited = (Date.now() - started) / 1000;
    assert.deepEqual(replies.map((r) => r.status), Array(9).fill(503));
    assert.ok(waited >= OUTAGE_HOLD - 0.5 && waited < OUTAGE_HOLD + 2, `answered after ${waited}s`);
    // Past outage_hold: 503 + Retry-After at once, none of them tries the upstream.
    const fast: Reply[] = [];
    for (let i = 0; i < 20; i++) fast.push(await get(on.url(`/app/fast?id=x${i}`)));
    assert.deepEqual(fast.map((r) => r.status), Array(20).fill(503));
    assert.equal(fast[0].headers["retry-after"], "7");
    assert.ok(Math.max(...fast.map((r) => r.ms)) < 300, `fail-fast answers took ${Math.max(...fast.map((r) => r.ms))} ms`);
    const during = (await on.status("app"));
    assert.equal(during.outage.fail_fast, true);
    assert.ok(during.counters.fail_fast >= 20);
    // Connect attempts: one request's (the first), and the prober's ~2 a second.
    await new Promise((r) => setTimeout(r, 1000));
    const lines = await on.newLogLines();
    const elapsed = (Date.now() - started) / 1000;
    const requestTries = lines.filter((l) => REQUEST_CONNECT.test(l)).length;
    const proberTries = (await on.status("app")).counters.probe_failures - probesBefore;
    assert.equal(requestTries, 1, "only the request that found the outage tried the upstream");
    assert.ok(proberTries >= elapsed && proberTries <= 2.5 * elapsed + 4, `${proberTries} prober connects in ${elapsed}s`);
    assert.equal(app.up, false);
    // Back: the site flows within a second.
    await app.start(on);
    const back = Date.now();
    await waitFor("a 200", async () => (await get(on.url("/app/back?id=b"))).status === 200, 3000);
    const flowsAfter = Date.now() - back;
    assert.ok(flowsAfter < 1000, `flows ${flowsAfter} ms after the application is back`);
    assert.equal((await app.rec(on, "f0")).count, 0, "a request answered 503 never reached the application");
  });

  it("an application that answers 502 itself is neither held nor sent again", async () => {
    await app.reset(on);
    const before = (await on.status("app")).counters;
    const r = await get(on.url("/app/bad502?id=bad"));
    assert.equal(r.status, 502);
    assert.match(r.body, /the application's own 502/);
    assert.equal((await app.rec(on, "bad")).count, 1, "sent once");
    const after = (await on.status("app"));
    assert.equal(after.state, "running");
    assert.equal(after.counters.outages, before.outages);
    assert.equal(after.counters.retried, before.retried);
    // Even where nginx intercepts it (proxy_intercept_errors): bytes were sent, so the
    // retry location answers the 502 and sends nothing again.
    const caught = await get(on.url("/intercept/bad502?id=bad2"));
    assert.equal(caught.status, 502);
    assert.equal((await app.rec(on, "bad2")).count, 1, "sent once");
    const later = await on.status("app");
    assert.equal(later.state, "running");
    assert.equal(later.counters.outages, before.outages);
    assert.equal(later.counters.retried, before.retried);
  });

  it("1 KB and 10 MB POST bodies (the latter in nginx's temp file) are sent again intact", async () => {
    await app.reset(on);
    await app.stop(on);
    const small = createHash("sha256").update("small").digest("hex").repeat(16); // 1 KB
    const big = createHash("sha256").update("big").digest("hex").repeat(10 * 1024 * 1024 / 64); // 10 MB
    const md5 = (s: string) => createHash("md5").update(s).digest("hex");
    const ps = send(on.url("/app/upload?id=small"), { method: "POST", body: small, headers: { "Content-Type": "application/octet-stream" } });
    const pb = send(on.url("/app/upload?id=big"), { method: "POST", body: big, headers: { "Content-Type": "application/octet-stream" } });
    await waitFor("both held", async () => (await on.status("app")).held === 2);
    await app.start(on);
    const [rs, rb] = await Promise.all([ps.reply, pb.reply]);
    assert.equal(rs.status, 200, rs.body);
    assert.equal(rb.status, 200, rb.body);
    assert.deepEqual(await app.rec(on, "small"), { total: 2, count: 1, body: `${small.length} ${md5(small)}` });
    assert.deepEqual((await app.rec(on, "big")).body, `${big.length} ${md5(big)}`);
    assert.equal((await app.rec(on, "big")).count, 1);
  });

  it("a body streamed to the upstream (proxy_request_buffering off) is not held nor sent again: 502, and no outage", async () => {
    await app.stop(on);
    await on.newLogLines();
    const body = createHash("sha256").update("nobuf").digest("hex").repeat(300_000 / 64);
    const r = await send(on.url("/nobuf/upload?id=nb"), { method: "POST", body, headers: { "Content-Type": "application/octet-stream" } }).reply;
    assert.equal(r.status, 502);
    const s = await on.status("app");
    assert.equal(s.state, "running");
    const lines = await on.newLogLines();
    assert.ok(lines.some((l) => /not held through the outage: .*(body was streamed|body bytes are held) \(proxy_request_buffering off\)/.test(l)), `the log says why:\n${lines.filter((l) => /intermission/.test(l)).join("\n")}`);
    await app.start(on);
    assert.equal((await app.rec(on, "nb")).count, 0, "never sent again");
  });

  it("an operator's pause during an outage makes it an ordinary pause: held until resume, then released", async () => {
    await app.reset(on);
    await app.stop(on);
    const first = send(on.url("/app/p?id=p0"));
    await waitFor("the outage", async () => (await on.status("app")).state === "outage");
    const second = send(on.url("/app/p?id=p1"));
    await waitFor("2 held", async () => (await on.status("app")).held === 2);
    const paused = await on.control("pause", "scope=app&ttl=0");
    assert.equal(paused.status, 200, paused.body);
    assert.equal((await on.status("app")).state, "paused");
    await app.start(on);
    // The outage's prober no longer decides: still held past its longest interval (0.5 s),
    // for the operator's resume. (The requests keep their outage bound, 3 s from arrival.)
    const probes = (await on.status("app")).counters.probe_failures;
    await new Promise((r) => setTimeout(r, 700));
    assert.equal((await on.status("app")).held, 2);
    assert.equal((await on.status("app")).counters.probe_failures, probes);
    const resumed = await on.control("resume", "scope=app");
    assert.equal(resumed.status, 200, resumed.body);
    const replies = await Promise.all([first.reply, second.reply]);
    assert.deepEqual(replies.map((x) => x.status), [200, 200]);
    assert.equal((await app.rec(on, "p0")).count, 1);
    assert.equal((await app.rec(on, "p1")).count, 1);
  });
});
