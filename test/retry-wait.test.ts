// The retry lane's wait for the failed address, and its answers, hold whatever happens
// around them.
//
// README ("The retry location"): after a failed connection the release waits until an
// address of the failed try accepts again (any of them: an upstream group's backups too),
// at most until the request's deadline, so the tries are not spent on a closed port; a
// reload in the meantime changes nothing. And no wiring turns a 502 into nginx's 500:
// with the retry error_page at server level, a 502 that is not retried is still a 502.
import { describe, it, before, after, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";
import { get, send, waitFor } from "./harness/http.ts";
import { APP_CONF, PROXY_APP as APP, STOP_PROXY_APP, RETRY_ON_ERROR, retryLocation } from "./harness/nginx-config.ts";


/** The application on :8082 (in front of the recording backend); :8083 never listens. */
const LOCATIONS = `
        location /w/ {
            access_by_lua_block { require("intermission").access() }
            proxy_pass http://127.0.0.1:8082;${RETRY_ON_ERROR}
        }
        # A primary that comes back and a backup that stays down: $upstream_addr is
        # "127.0.0.1:8082, 127.0.0.1:8083", the backup last.
        location /grp/ {
            access_by_lua_block { require("intermission").access() }
            proxy_pass http://grp;${RETRY_ON_ERROR}
        }
        # An error_page into the proxying named location (the README's one redirect): the
        # location that makes the first jump needs recursive_error_pages too.
        location /ep/ {
            access_by_lua_block { require("intermission").access() }
            try_files /nonexistent =404;
            error_page 404 = @ep;
            recursive_error_pages on;
        }
        location /epoff/ {
            access_by_lua_block { require("intermission").access() }
            try_files /nonexistent =404;
            error_page 404 = @ep;
        }
        location @ep {
            proxy_pass http://127.0.0.1:8082;${RETRY_ON_ERROR}
        }
        # A rewrite-phase handler that is not idempotent: it appends to a header, which the
        # application receives as its id.
        location /hops/ {
            set $hops "";
            rewrite_by_lua_block {
                local hops = (ngx.req.get_headers()["X-Hops"] or "") .. "h"
                ngx.req.set_header("X-Hops", hops)
                ngx.var.hops = hops
            }
            access_by_lua_block { require("intermission").access() }
            proxy_pass http://127.0.0.1:8082/hops?id=$hops;${RETRY_ON_ERROR}
        }
        # One rewrite ... last before access() (the README's one redirect, which
        # intermission cannot see), into a group that never has a live server.
        location /rw1/ {
            rewrite ^/rw1/(.*)$ /rwdead/$1 last;
        }
        location /rwdead/ {
            set $intermission_max_time 4;
            access_by_lua_block { require("intermission").access() }
            proxy_pass http://deadgroup;${RETRY_ON_ERROR}
        }${retryLocation()}`;

const REFUSED = [/connect\(\) failed \(111: Connection refused\) while connecting to upstream/, /no live upstreams/];

describe("the retry lane waits for the failed address", () => {
  let node: NginxNode;
  const stopApp = () => node.exec(STOP_PROXY_APP);
  before(async () => {
    node = await NginxNode.start({
      workers: 2,
      setup: { release_window: 2, max_hold: 20 },
      httpDirectives: `
    upstream grp {
        server 127.0.0.1:8082 max_fails=0;
        server 127.0.0.1:8083 backup;
    }
    upstream deadgroup {
        server 127.0.0.1:8083 down;
    }`,
      serverDirectives: `
        header_filter_by_lua_block { require("intermission").header_filter() }
        log_by_lua_block           { require("intermission").log() }`,
      extraLocations: LOCATIONS,
      files: [{ content: APP, target: APP_CONF }],
    });
  });
  after(async () => node?.stop());
  beforeEach(async () => {
    await node.reset();
    await stopApp();
    await node.newLogLines();
  });
  afterEach(async () => {
    await stopApp();
    await node.assertCleanLog(REFUSED);
  });

  /** One request held, released into the closed port, and waiting in the retry lane. */
  async function heldInRetryLane(path: string) {
    const retriedBefore = (await node.status()).counters.retried;
    await node.control("pause", "ttl=0");
    const pending = send(node.url(path));
    await node.held(1);
    await node.control("resume");
    await waitFor("held again in the retry lane", async () => (await node.status()).counters.retried > retriedBefore);
    return pending;
  }

  it("a reload while the request waits for its closed port does not spend its tries: 200 once the app is up", async () => {
    const pending = await heldInRetryLane("/w/x?id=reload1");
    await node.reload();
    // The old worker holds the request and exits once it is answered. Before the fix its
    // prober stopped at once and lifted the wait: both other tries went to the closed
    // port within a fraction of a second, and the client had 503 before the app started.
    await waitFor("the reload under way", async () => (await node.shuttingDownWorkers()) > 0);
    await new Promise((r) => setTimeout(r, 1500));
    const early = await Promise.race([pending.reply, new Promise((r) => setTimeout(() => r(undefined), 10))]);
    assert.equal(early, undefined, `answered before the app was up: ${JSON.stringify(early)}`);
    await node.exec(["nginx", "-c", APP_CONF]);
    const reply = await pending.reply;
    assert.equal(reply.status, 200, reply.body);
    assert.deepEqual((await node.arrivals()).ids, ["reload1"], "sent to the app once");
    const lines = await node.newLogLines();
    assert.ok(!lines.some((l) => /not retried again/.test(l)), lines.join("\n"));
  });

  it("an upstream group with a backup: the release waits for any of its addresses, and goes when the primary is back", async () => {
    const pending = await heldInRetryLane("/grp/x?id=grp1");
    await new Promise((r) => setTimeout(r, 500));
    await node.exec(["nginx", "-c", APP_CONF]);
    const reply = await pending.reply;
    assert.equal(reply.status, 200, reply.body);
    // Before the fix only the backup (the last address) was probed: 503 at max_hold.
    assert.ok(reply.ms < 10_000, `answered after ${Math.round(reply.ms)} ms`);
    assert.deepEqual((await node.arrivals()).ids, ["grp1"]);
    const lines = await node.newLogLines();
    assert.ok(lines.some((l) => /upstream 127\.0\.0\.1:8082 for scope default accepts connections again/.test(l)), lines.join("\n"));
  });

  it("an error_page into the proxying named location, recursive_error_pages on where it jumps from: retried, 200", async () => {
    const pending = await heldInRetryLane("/ep/x?id=ep1");
    await node.exec(["nginx", "-c", APP_CONF]);
    const reply = await pending.reply;
    assert.equal(reply.status, 200, reply.body);
    assert.deepEqual((await node.arrivals()).ids, ["ep1"]);
  });

  it("the same without recursive_error_pages where it jumps from: nginx's 502, as the README says", async () => {
    const retriedBefore = (await node.status()).counters.retried;
    await node.control("pause", "ttl=0");
    const pending = send(node.url("/epoff/x?id=ep2"));
    await node.held(1);
    await node.control("resume");
    const reply = await pending.reply;
    assert.equal(reply.status, 502, reply.body);
    assert.equal((await node.status()).counters.retried, retriedBefore, "never reached the retry location");
  });

  it("the rewrite phase runs again on a retry: a handler that appends to a header appends twice (README)", async () => {
    const pending = await heldInRetryLane("/hops/x");
    await node.exec(["nginx", "-c", APP_CONF]);
    const reply = await pending.reply;
    assert.equal(reply.status, 200, reply.body);
    assert.deepEqual((await node.arrivals()).ids, ["hh"], "the first try sent h, the retry hh");
  });

  it("a rewrite ... last before access(), the upstream never live: every try spent, then 503, never nginx's 500", async () => {
    const retriedBefore = (await node.status()).counters.retried;
    await node.control("pause", "ttl=0");
    const pending = send(node.url("/rw1/x"));
    await node.held(1);
    await node.control("resume");
    const reply = await pending.reply;
    assert.equal(reply.status, 503, reply.body);
    assert.equal((await node.status()).counters.retried - retriedBefore, 2, "both retries used");
    const lines = await node.newLogLines();
    assert.ok(!lines.some((l) => /redirection cycle/.test(l)), lines.join("\n"));
  });
});

describe("the retry error_page at server level", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({
      workers: 2,
      // outage_hold 0: a never-held request that meets a dead upstream gets nginx's 502 (with it on, it is held through the outage instead).
      setup: { release_window: 2, max_hold: 4, outage_hold: 0 },
      hooks: "server",
      serverDirectives: RETRY_ON_ERROR,
      extraLocations: `
        location /dead/ { proxy_pass http://127.0.0.1:8083; }${retryLocation()}`,
    });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog(REFUSED));

  it("a request never held whose upstream refuses gets nginx's 502, not a 500 redirection cycle", async () => {
    await node.newLogLines();
    const reply = await get(node.url("/dead/x"));
    assert.equal(reply.status, 502, reply.body);
    assert.match(reply.body, /<h1>502 Bad Gateway<\/h1>/);
    const lines = await node.newLogLines();
    assert.ok(!lines.some((l) => /redirection cycle/.test(l)), lines.join("\n"));
  });

  it("a held request whose tries run out gets on_timeout's 503, never a 500", async () => {
    await node.newLogLines();
    await node.control("pause", "ttl=0");
    const pending = send(node.url("/dead/y"));
    await node.held(1);
    await node.control("resume");
    const reply = await pending.reply;
    assert.equal(reply.status, 503, reply.body);
    const lines = await node.newLogLines();
    assert.ok(!lines.some((l) => /redirection cycle/.test(l)), lines.join("\n"));
  });
});

describe("the retry location answers the gateway error nginx made", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({
      setup: { release_window: 2, max_hold: 10 },
      hooks: "server",
      extraLocations: `
        location /slow/ {
            access_by_lua_block { require("intermission").access() }
            proxy_read_timeout 1s;
            proxy_pass http://127.0.0.1:8081;${RETRY_ON_ERROR}
        }${retryLocation()}`,
    });
  });
  after(async () => node?.stop());
  beforeEach(async () => node.reset());
  afterEach(async () => node.assertCleanLog([/upstream timed out \(110: Connection timed out\) while reading response header from upstream/]));

  it("an upstream that times out: 504 as without the retry wiring, never held and after a release", async () => {
    // In the error_page's target $status reads 0: the answer used to be 502 (a review found it).
    await get(`${node.backend}/_backend/hang?seconds=60`);
    const direct = await get(node.url("/slow/?id=n1"));
    assert.equal(direct.status, 504, `never held: ${direct.body}`);
    await node.control("pause");
    const pending = send(node.url("/slow/?id=h1"));
    await node.held(1);
    await node.control("resume");
    const released = await pending.reply;
    assert.equal(released.status, 504, `held and released: ${released.body}`);
  });
});
