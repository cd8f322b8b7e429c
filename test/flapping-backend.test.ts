// Breaker: POST bodies through the retry location, hooks in odd places (black box).
import { describe, it, before, after, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { NginxNode } from "./harness/node.ts";
import { PendingRequest, get, send, waitFor } from "./harness/http.ts";
import { sleep, assertIdle } from "./harness/held.ts";
import { TestApp, READ_BODY_LUA } from "./harness/app.ts";
import { RETRY_ON_ERROR, retryLocation } from "./harness/nginx-config.ts";

/** The app to restart: on :8082, answers each request with the md5 and length of its body, records ids. */
const app = new TestApp({
  name: "app",
  listen: "127.0.0.1:8082",
  dict: "app 1m",
  logLevel: "warn",
  http: `
    client_max_body_size 10m;`,
  server: `
        location = /_ids {
            content_by_lua_block {
                local out = {}
                while true do local v = ngx.shared.app:lpop("ids"); if not v then break end; out[#out+1] = v end
                for _, v in ipairs(out) do ngx.shared.app:rpush("ids", v) end
                ngx.say(table.concat(out, ","))
            }
        }
        location / {
            content_by_lua_block {${READ_BODY_LUA}
                ngx.shared.app:rpush("ids", ngx.var.arg_id or "-")
                ngx.log(ngx.WARN, "APPID=", ngx.var.arg_id or "-", "=")
                ngx.say(ngx.md5(body), " ", #body)
            }
        }`,
});
const APP_CONF = app.confPath;

const FLAKY = `
        location /app/ {
            client_max_body_size 10m;
            access_by_lua_block        { require("intermission").access() }
            header_filter_by_lua_block { require("intermission").header_filter() }
            log_by_lua_block           { require("intermission").log() }
            proxy_pass http://127.0.0.1:8082/;${RETRY_ON_ERROR}
        }${retryLocation(true)}
        location = /appids { proxy_pass http://127.0.0.1:8082/_ids; }
        location /ep/ {
            access_by_lua_block        { require("intermission").access() }
            header_filter_by_lua_block { require("intermission").header_filter() }
            log_by_lua_block           { require("intermission").log() }
            proxy_intercept_errors on;
            error_page 404 = @fallback;
            proxy_pass http://backend/;
        }
        location @fallback {
            # README: "If a location defines its own log_by_lua* ... call log() from it too";
            # a named location inherits none of /ep/'s hooks, so it gets all three.
            access_by_lua_block        { require("intermission").access() }
            header_filter_by_lua_block { require("intermission").header_filter() }
            log_by_lua_block           { require("intermission").log() }
            content_by_lua_block { ngx.say("fallback") }
        }`;

describe("break: POST bodies released into a port that is not listening yet", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({
      workers: 2,
      setup: { release_window: 2, max_hold: 20 },
      extraLocations: FLAKY,
      files: [app.file()],
    });
  });
  after(async () => node?.stop());
  beforeEach(async () => {
    await node.reset();
    await node.exec(["sh", "-c", `nginx -c ${APP_CONF} -s stop 2>/dev/null; while [ -e /run/app.pid ]; do sleep 0.01; done; : > /var/log/nginx/app-error.log; true`]);
  });
  // The flapping app's fast stop (-s stop) also cuts requests it had received: nginx logs
  // those as reset or closed by the upstream (the test bounds how many end in 502).
  afterEach(async () => node.assertCleanLog([/connect\(\) failed \(111: Connection refused\) while connecting to upstream/, /a client request body is buffered to a temporary file/,
    /recv\(\) failed \(104: Connection reset by peer\) while reading response header from upstream/, /upstream prematurely closed connection while reading response header from upstream/]));

  it("every body reaches the app intact, exactly once, after the retry", async () => {
    // README: "A released request whose upstream connection failed before a byte was sent
    // ... goes back to the head of the queue and is sent again, POSTs too".
    await node.control("pause", "ttl=0");
    const bodies = [10, 300_000, 50, 1_000_000, 7, 64_000].map((n, i) => crypto.randomBytes(n).toString("base64").slice(0, n) + `#${i}`);
    const pending: PendingRequest[] = [];
    for (const [i, b] of bodies.entries()) {
      pending.push(send(node.url(`/app/?id=p${i}`), { method: "POST", body: b, headers: { "Content-Type": "application/octet-stream" } }));
      await node.held(i + 1);
    }
    await node.control("resume");
    await waitFor("a retry", async () => (await node.status()).counters.retried > 0);
    await sleep(300);
    await node.exec(["nginx", "-c", APP_CONF]);
    const replies = await Promise.all(pending.map((p) => p.reply));
    for (const [i, r] of replies.entries()) {
      assert.equal(r.status, 200, `p${i}: ${r.status} ${r.body.slice(0, 200)}`);
      const md5 = crypto.createHash("md5").update(bodies[i]).digest("hex");
      assert.equal(r.body.trim(), `${md5} ${Buffer.byteLength(bodies[i])}`, `p${i}'s body intact after the retry`);
    }
    const seen = (await get(node.url("/appids"))).body.trim().split(",");
    assert.deepEqual([...seen].sort(), bodies.map((_, i) => `p${i}`).sort(), "each exactly once");
    await assertIdle(node);
  });

  it("an app that flaps (up, down, up) during the release: every refused connection is retried; only requests cut after they were sent fail; none reaches the app twice", async () => {
    // README: "A released request whose upstream connection failed before a byte was sent
    // (connection refused ...) goes back to the head of the queue and is sent again, POSTs
    // too". The app's fast stop (-s stop) also cuts requests it had already received: those
    // were sent, so they are not retried (a 502, as nginx made it). So each request ends 200,
    // or 502 with nginx's last upstream error for it a cut after sending, never a refused
    // connect. (Seen: 0 to 2 of 30 cut across runs; the rest 200.)
    await node.control("pause", "ttl=0");
    const before = (await node.status()).counters.retried;
    const pending: PendingRequest[] = [];
    for (let i = 0; i < 30; i++) {
      pending.push(i % 2 ? send(node.url(`/app/?id=f${i}`), { method: "POST", body: `body${i}`, headers: { "Content-Type": "text/plain" } }) : node.send(`/app/?id=f${i}`));
    }
    await waitFor("30 held", async () => (await node.status()).held === 30);
    await node.control("resume");
    for (let k = 0; k < 3; k++) {
      await sleep(150);
      await node.exec(["nginx", "-c", APP_CONF]);
      await sleep(60);
      await node.exec(["sh", "-c", `nginx -c ${APP_CONF} -s stop; while [ -e /run/app.pid ]; do sleep 0.01; done`]);
    }
    await node.exec(["nginx", "-c", APP_CONF]);
    const replies = await Promise.all(pending.map((p) => p.reply));
    const log = (await node.errorLog()).split("\n");
    const failed = replies.map((r, i) => ({ id: `f${i}`, status: r.status })).filter((r) => r.status !== 200);
    for (const f of failed) {
      const upstreamErrors = log.filter((l) => l.includes(` /app/?id=${f.id} HTTP/`) && /upstream/.test(l));
      const last = upstreamErrors.at(-1) ?? "(no upstream error logged)";
      assert.ok(f.status === 502 && /while (reading response header from|sending request to) upstream/.test(last) && !/connect\(\) failed/.test(last),
        `${f.id} answered ${f.status}: only a request cut after it was sent may fail; its last upstream error: ${last}`);
    }
    const retried = (await node.status()).counters.retried - before;
    console.log(`# flapping app: ${failed.length} of 30 cut after they were sent (502), ${retried} retries`);
    assert.ok(retried > 0, "the app was down at the resume: some connects were refused and retried");
    // The app's shared dict dies with each restart: count from its log instead.
    const appLog = await node.exec(["sh", "-c", "grep -o 'APPID=f[0-9]*=' /var/log/nginx/app-error.log || true"]);
    const seen = appLog.split("\n").map((l) => l.trim()).filter((l) => l.startsWith("APPID=f"));
    assert.equal(seen.length, new Set(seen).size, `none twice: ${seen}`);
    const ok = replies.map((r, i) => (r.status === 200 ? `APPID=f${i}=` : "")).filter(Boolean);
    assert.deepEqual(ok.filter((id) => !seen.includes(id)), [], "every 200 reached the app");
    await assertIdle(node);
  });
});

describe("break: error_page into a named location with access(), paused again meanwhile", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ workers: 2, setup: { release_window: 1, max_hold: 10 }, extraLocations: FLAKY, files: [app.file()] });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("access() is idempotent: the redirected request is not held a second time; idle after", async () => {
    // README: "access() ... is idempotent per request"; log() undoes it "once, even across
    // internal redirects (error_page, try_files, ngx.exec)".
    await node.control("pause", "ttl=0");
    const p = node.send("/ep/?id=e1&delay=1&status=404");
    await node.held(1);
    await node.control("resume");
    await waitFor("at the backend", async () => (await node.arrivals()).ids.includes("e1"));
    await node.control("pause", "ttl=0");
    const r = await p.reply;
    assert.equal(r.status, 200);
    assert.equal(r.body.trim(), "fallback");
    assert.ok(r.ms < 4000, `held again after the redirect: ${Math.round(r.ms)} ms`);
    await node.control("resume");
    await assertIdle(node);
  });
});
