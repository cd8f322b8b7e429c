// Unplanned outages and scopes (found by a black-box review of the README's snippet):
// - default is every location that sets no scope, whatever its upstream: one dead upstream
//   must not hold or fail requests whose own upstream answers;
// - a pause of default holds the whole node, a scope in an outage too: when that scope's
//   application comes back during the node's pause, its held requests stay held until the
//   node's resume.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";
import { PendingRequest, waitFor } from "./harness/http.ts";
import { sleep } from "./harness/held.ts";
import { TestApp } from "./harness/app.ts";
import { RETRY_ON_ERROR, retryLocation, serverHooks } from "./harness/nginx-config.ts";

/** The application: counts its arrivals, answers its id. */
const app = new TestApp({
  name: "scopeapp",
  listen: "127.0.0.1:8082",
  dict: "scopeapp 1m",
  server: `
        location = /_count { content_by_lua_block { ngx.say(ngx.shared.scopeapp:get("n") or 0) } }
        location / { content_by_lua_block { ngx.shared.scopeapp:incr("n", 1, 0) ngx.say("app ", ngx.var.arg_id or "-") } }`,
});

const LOCATIONS = `
        # No scope: default. /dead/ goes to a port nothing listens on, /live/ to the app.
        location /dead/ {
            access_by_lua_block { require("intermission").access() }
            proxy_pass http://127.0.0.1:8083;${RETRY_ON_ERROR}
        }
        location /live/ {
            access_by_lua_block { require("intermission").access() }
            proxy_pass http://127.0.0.1:8082;${RETRY_ON_ERROR}
        }
        # The README's snippet: the site's location has a scope, the control location none.
        location /site/ {
            set $intermission_scope myapp;
            access_by_lua_block { require("intermission").access() }
            proxy_pass http://127.0.0.1:8082;${RETRY_ON_ERROR}
        }
        # An application on a unix socket whose file is gone.
        location /sock/ {
            set $intermission_scope sockapp;
            access_by_lua_block { require("intermission").access() }
            proxy_pass http://unix:/tmp/scopes-gone.sock:;${RETRY_ON_ERROR}
        }${retryLocation()}`;
const REQUEST_CONNECT = /\[error\].*connect\(\) failed \(111: Connection refused\) while connecting to upstream/;
/** nginx's own line for a request's connect to a unix socket whose file is gone (the prober's would say "context: ngx.timer"). */
const REQUEST_SOCK = /\[crit\].*connect\(\) to unix:\/tmp\/scopes-gone\.sock failed \(2: No such file or directory\) while connecting to upstream/;

describe("unplanned outages and scopes", () => {
  let node: NginxNode;
  const arrivals = async () => Number((await node.exec(["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8082 && printf 'GET /_count HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3 | tail -1"])).trim());

  before(async () => {
    node = await NginxNode.start({
      workers: 2,
      setup: { max_hold: 20, outage_hold: 6 },
      files: [app.file()],
      serverDirectives: serverHooks(),
      extraLocations: LOCATIONS,
    });
    await app.start(node);
  });
  after(async () => node?.stop());
  afterEach(async () => {
    await app.start(node);
    await node.control("resume");
    await node.assertCleanLog([REQUEST_CONNECT, REQUEST_SOCK]);
  });

  it("default's outage (one dead upstream of two) holds the requests to the dead one only: the live one answers at once", async () => {
    const dead = node.send("/dead/x?id=d1");
    await waitFor("default in outage", async () => (await node.status()).state === "outage");
    for (let i = 0; i < 5; i++) {
      const t0 = Date.now();
      const r = await node.get(`/live/x?id=l${i}`);
      assert.equal(r.status, 200, r.body);
      assert.equal(r.body.trim(), `app l${i}`);
      assert.ok(Date.now() - t0 < 1000, `a request to the live upstream took ${Date.now() - t0} ms during default's outage`);
    }
    // The dead one is held through the outage, and answered as on_timeout says at outage_hold.
    const r = await dead.reply;
    assert.equal(r.status, 503, r.body);
    // Past outage_hold: the dead upstream's requests get 503 at once, the live one still 200.
    const fast = await node.get("/dead/x?id=d2");
    assert.equal(fast.status, 503);
    assert.equal((await node.get("/live/x?id=l9")).status, 200);
  });

  it("a pause of default during a scope's outage holds that scope's requests when its application comes back, until the node's resume", async () => {
    await app.stop(node);
    const held: PendingRequest[] = [1, 2, 3].map((i) => node.send(`/site/x?id=s${i}`));
    await waitFor("myapp in outage, 3 held", async () => {
      const s = await node.status("myapp");
      return s.state === "outage" && s.held === 3;
    });
    // `intermission run` with no --scope: the node's pause.
    const p = await node.control("pause", "ttl=0");
    assert.equal(p.status, 200, p.body);
    const later = node.send("/site/x?id=s4");
    await node.held(1);
    await app.start(node);
    // The prober sees the application back within about half a second (outage-prober's
    // figures); 2 s is the window in which nothing may reach it while the node is paused.
    await sleep(2000);
    assert.equal(await arrivals(), 0, "requests reached the application while the node was paused");
    assert.equal((await node.status("myapp")).held, 3, JSON.stringify(await node.status("myapp")));
    const r = await node.control("resume");
    assert.equal(r.status, 200, r.body);
    const replies = await Promise.all([...held, later].map((x) => x.reply));
    assert.deepEqual(replies.map((x) => x.status), [200, 200, 200, 200], replies.map((x) => x.body).join("|"));
  });

  it("an application on a unix socket whose file is gone: the outage's prober looks for the file, and logs nothing (nginx would log each connect at [crit])", async () => {
    const r = await node.get("/sock/x?id=u1");
    assert.equal(r.status, 503, r.body);
    const s = await node.status("sockapp");
    assert.equal(s.state, "outage");
    assert.ok(s.counters.probe_failures >= 3, `the prober ran: ${JSON.stringify(s.counters)}`);
    const lines = await node.assertCleanLog([REQUEST_CONNECT, REQUEST_SOCK]);
    assert.equal(lines.filter((l) => /\[crit\]/.test(l) && !REQUEST_SOCK.test(l)).length, 0);
    await node.control("resume", "scope=sockapp");
  });
});
