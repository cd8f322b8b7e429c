// The retry lane sends again exactly the request that failed, or does not send it at all.
//
// README ("The retry location"): a released request whose upstream connection failed
// before a byte was sent is held again and sent again "as it was first sent: the same
// location and upstream, method, bytes of the URI, headers and body"; a request that
// cannot be sent again exactly (named there) gets the 502 nginx made, and no wiring the
// README allows runs into nginx's limit of ten internal redirects.
//
// Each case: the request is first sent with the application up and not held, and what
// the application received is the reference (a first try). Then the same request is held,
// released while the application refuses connections (the first try fails at connect),
// and the application is started: what it receives must be the reference, byte for byte
// (request line, headers, body), or, for a request that cannot be replayed exactly,
// nothing, and the client gets 502.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { createHash } from "node:crypto";
import { NginxNode } from "./harness/node.ts";
import { get, waitFor } from "./harness/http.ts";
import { TestApp, READ_BODY_LUA } from "./harness/app.ts";
import { RETRY_ON_ERROR, retryLocation } from "./harness/nginx-config.ts";

/** The application on :8082: records each arrival's request line and headers as received, and its body. */
const app = new TestApp({
  name: "recorder",
  listen: "8082",
  dict: "rec 16m",
  server: `
        client_max_body_size 10m;
        location = /_rec {
            content_by_lua_block {
                local d = ngx.shared.rec
                local out = {}
                for i = 1, (d:get("n") or 0) do out[#out + 1] = { head = d:get("h" .. i), body = d:get("b" .. i) } end
                ngx.say(require("cjson.safe").encode(out))
            }
        }
        location = /_rec_reset { content_by_lua_block { ngx.shared.rec:flush_all() ngx.say("reset") } }
        location / {
            content_by_lua_block {${READ_BODY_LUA}
                local d = ngx.shared.rec
                local n = d:incr("n", 1, 0)
                d:set("h" .. n, ngx.req.raw_header())
                d:set("b" .. n, #body .. " " .. ngx.md5(body))
                ngx.say("app ", ngx.req.get_method(), " ", #body)
            }
        }`,
});

const ACCESS_HOOK = `
            access_by_lua_block { require("intermission").access() }`;
const PROXY = `
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            client_max_body_size 10m;`;

/** The locations under test; `access`: the access hook in each (empty: the hooks are at server level). */
const locations = (ACCESS: string, hooks: "location" | "server") => `
        # the README's wiring
        location /plain/ {${ACCESS}${PROXY}
            proxy_pass http://127.0.0.1:8082;${RETRY_ON_ERROR}
        }
        # the common prefix-stripping pattern: the URI changes before access()
        location /api/ {
            rewrite ^/api/(.*)$ /$1 break;${ACCESS}${PROXY}
            proxy_pass http://127.0.0.1:8082;${RETRY_ON_ERROR}
        }
        # proxy_pass with a URI part
        location /uri/ {${ACCESS}${PROXY}
            proxy_pass http://127.0.0.1:8082/base/;${RETRY_ON_ERROR}
        }
        # try_files into a named location, and alias in front of it
        location /tf/ {${ACCESS}
            try_files /nonexistent @app;
        }
        location /alias/ {${ACCESS}
            alias /srv/nonexistent/;
            try_files $uri @app;
        }
        location @app {${PROXY}
            proxy_pass http://127.0.0.1:8082;${RETRY_ON_ERROR}
        }
        # the body streamed to the upstream as it arrives
        location /nobuf/ {${ACCESS}${PROXY}
            proxy_request_buffering off;
            proxy_pass http://127.0.0.1:8082;${RETRY_ON_ERROR}
        }
        # try_files into a named location whose upstream never accepts (an address that
        # cannot be probed: every try is spent): the most internal redirects a retry can use
        location /tfdead/ {${ACCESS}
            set $intermission_max_time 8;
            try_files /nonexistent @dead;
        }
        location @dead {${PROXY}
            proxy_pass http://deadgroup;${RETRY_ON_ERROR}
        }
        # $request_id sent upstream. (Only in one node: used anywhere, nginx caches it per
        # request, and the other node checks the log lines where each read is a new id.)
        ${hooks === "server" ? `location /rid/ {${ACCESS}${PROXY}
            proxy_set_header X-Request-Id $request_id;
            proxy_pass http://127.0.0.1:8082;${RETRY_ON_ERROR}
        }` : ""}
        # Two redirects on the way (beyond the README's one), both visible to intermission:
        # access() only in the named location, and an error_page to another location.
        ${hooks === "location" ? `location /tf2/ {
            try_files /nonexistent @tf2;
        }
        location @tf2 {${ACCESS}${PROXY}
            proxy_pass http://deadgroup;
            error_page 502 = /dead2/;
            recursive_error_pages on;
        }
        location /dead2/ {${PROXY}
            proxy_pass http://deadgroup;${RETRY_ON_ERROR}
        }` : ""}${retryLocation()}
        location = /_rec { proxy_pass http://127.0.0.1:8082/_rec; }
        location = /_rec_reset { proxy_pass http://127.0.0.1:8082/_rec_reset; }`;

interface RawReply { status: number; text: string }

/** One request written byte for byte on its own connection; the reply's status. */
function rawRequest(host: string, port: number, bytes: Buffer): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, host);
    const chunks: Buffer[] = [];
    s.on("data", (c: Buffer) => chunks.push(c));
    s.on("error", reject);
    s.on("end", () => s.end());
    s.on("close", () => {
      const text = Buffer.concat(chunks).toString("latin1");
      resolve({ status: Number(/^HTTP\/1\.[01] (\d+)/.exec(text)?.[1] ?? 0), text: text || "(no answer)" });
    });
    s.setTimeout(60_000, () => s.destroy(new Error("client timeout")));
    s.write(bytes); // no half-close: nginx would take it for a client gone (499)
  });
}

interface Case {
  name: string;
  method: string;
  target: string;
  body?: Buffer;
  chunked?: boolean;
  /** retried: the application receives the reference once; refused: nothing, the client 502. */
  expect: "retried" | "refused";
  /** The request line the application must see (besides equal to the reference). */
  line?: string;
  /** X-Request-Id is sent upstream: it must be the id of the request's log lines. */
  requestIdHeader?: boolean;
}

function requestBytes(c: Case): Buffer {
  const head = `${c.method} ${c.target} HTTP/1.1\r\nHost: front.example\r\nX-Case: ${c.name}\r\nUser-Agent: fidelity\r\nConnection: close\r\n`;
  if (c.body === undefined) return Buffer.from(`${head}\r\n`, "latin1");
  if (!c.chunked) return Buffer.concat([Buffer.from(`${head}Content-Length: ${c.body.length}\r\n\r\n`, "latin1"), c.body]);
  return Buffer.concat([Buffer.from(`${head}Transfer-Encoding: chunked\r\n\r\n${c.body.length.toString(16)}\r\n`, "latin1"), c.body, Buffer.from("\r\n0\r\n\r\n", "latin1")]);
}

const bodyOf = (n: number, seed: string) => Buffer.from(createHash("sha256").update(seed).digest("hex").repeat(Math.ceil(n / 64)).slice(0, n), "latin1");
const sig = (b: Buffer | undefined) => (b === undefined ? "0 d41d8cd98f00b204e9800998ecf8427e" : `${b.length} ${createHash("md5").update(b).digest("hex")}`);

/** CASES=name,name runs only those cases (the redirect-budget test always runs). */
const ONLY = process.env.CASES?.split(",");
const CASES: Case[] = ([
  // README: the bytes of the URI as the client sent them: %25, %3F, + and an encoded query.
  { name: "plain-encoded", method: "POST", target: "/plain/a+b%25c%3Fd/%2525?x=1&y=%2F&z=a+b", body: Buffer.from("hello"), expect: "retried", line: "POST /plain/a+b%25c%3Fd/%2525?x=1&y=%2F&z=a+b HTTP/1.1" },
  { name: "plain-utf8", method: "GET", target: "/plain/caf%C3%A9%20menu", expect: "retried", line: "GET /plain/caf%C3%A9%20menu HTTP/1.1" },
  // An encoded slash or plus: after an internal redirect nginx can only send them decoded.
  { name: "plain-slash", method: "DELETE", target: "/plain/raw/projects/group%2Fsite", expect: "refused" },
  { name: "plain-plus", method: "PUT", target: "/plain/a%2Bb", body: Buffer.from("x"), expect: "refused" },
  // The prefix-stripping rewrite: the api application, never the web one (location /).
  { name: "api", method: "POST", target: "/api/orders/42/cancel?id=api1", body: Buffer.from("{}"), expect: "retried", line: "POST /orders/42/cancel?id=api1 HTTP/1.1" },
  { name: "api-encoded", method: "PATCH", target: "/api/orders/a%2Fb%3F%25?id=api2", body: Buffer.from("{\"a\":1}"), expect: "retried" },
  // proxy_pass with a URI part.
  { name: "uri-part", method: "GET", target: "/uri/x%20y?q=1", expect: "retried", line: "GET /base/x%20y?q=1 HTTP/1.1" },
  // try_files into a named location; alias.
  { name: "named", method: "POST", target: "/tf/page?id=tf1", body: Buffer.from("form=1"), expect: "retried", line: "POST /tf/page?id=tf1 HTTP/1.1" },
  { name: "named-slash", method: "GET", target: "/tf/a%2Fb", expect: "refused" },
  { name: "alias", method: "GET", target: "/alias/missing.txt?id=al1", expect: "retried", line: "GET /alias/missing.txt?id=al1 HTTP/1.1" },
  // Bodies nginx holds whole: a temp file, and a chunked one.
  { name: "body-file", method: "POST", target: "/plain/upload", body: bodyOf(300_000, "file"), expect: "retried" },
  { name: "body-chunked", method: "POST", target: "/plain/chunked", body: bodyOf(100_000, "chunked"), chunked: true, expect: "retried" },
  // README: a body streamed to the upstream (proxy_request_buffering off) is not sent again.
  // $request_id upstream and in the log: one id for the request's whole life.
  { name: "rid", method: "GET", target: "/rid/x?id=rid1", expect: "retried", requestIdHeader: true },
  { name: "nobuf-small", method: "POST", target: "/nobuf/small", body: Buffer.from("a small body nginx read whole"), expect: "retried" },
  { name: "nobuf-upload", method: "POST", target: "/nobuf/upload", body: bodyOf(300_000, "nobuf"), expect: "refused" },
  { name: "nobuf-chunked", method: "POST", target: "/nobuf/chunked", body: bodyOf(300_000, "nobuf-chunked"), chunked: true, expect: "refused" },
] as Case[]).filter((c) => ONLY === undefined || ONLY.includes(c.name));

/** The README's wirings: access() in each location, or every hook at server level. */
function fidelitySuite(hooks: "location" | "server", cases: Case[]): void {
describe(`retry fidelity, hooks ${hooks === "location" ? "in the locations" : "at server level"}: a retried request is the request that failed, byte for byte`, () => {
  let node: NginxNode;
  let host: string;
  let port: number;
  const startApp = () => app.start(node);
  const stopApp = () => app.stop(node);
  const arrivals = async (): Promise<{ head: string; body: string }[]> => {
    const r = await get(node.url("/_rec"));
    assert.equal(r.status, 200, r.body);
    const list = JSON.parse(r.body);
    return Array.isArray(list) ? list : [];
  };

  before(async () => {
    node = await NginxNode.start({
      workers: 2,
      setup: { max_hold: 30, release_window: 2 },
      files: [app.file()],
      httpDirectives: `
    upstream deadgroup {
        server 127.0.0.1:8083 down;
        server 127.0.0.1:8084 down;
    }`,
      // The README's wiring: log and header_filter at server level, access in the
      // locations; or all three at server level (the harness puts them there).
      hooks,
      serverDirectives: hooks === "location" ? `
        header_filter_by_lua_block { require("intermission").header_filter() }
        log_by_lua_block           { require("intermission").log() }` : "",
      extraLocations: locations(hooks === "location" ? ACCESS_HOOK : "", hooks),
    });
    const u = new URL(node.base);
    host = u.hostname;
    port = Number(u.port);
  });
  after(async () => {
    await stopApp().catch(() => undefined);
    await node?.stop();
  });
  afterEach(async () => {
    await stopApp();
    await node.control("resume");
    await node.assertCleanLog([/connect\(\) failed \(111: Connection refused\)/, /no live upstreams/]);
  });

  for (const c of cases) {
    it(`${c.name}: ${c.method} ${c.target.slice(0, 60)}${c.body ? ` with a ${c.body.length}-byte${c.chunked ? " chunked" : ""} body` : ""} is ${c.expect === "retried" ? "sent again exactly" : "not sent again: 502"}`, async () => {
      // The reference: the same request with the application up and nothing held.
      await startApp();
      await get(node.url("/_rec_reset"));
      const first = await rawRequest(host, port, requestBytes(c));
      assert.equal(first.status, 200, first.text.slice(0, 300));
      const reference = await arrivals();
      assert.equal(reference.length, 1, JSON.stringify(reference));
      if (c.line !== undefined) assert.equal(reference[0].head.split("\r\n")[0], c.line, "the reference request line");
      if (c.body !== undefined) assert.equal(reference[0].body, sig(c.body), "the reference body");
      await get(node.url("/_rec_reset"));
      await stopApp();
      await node.resetBackend();
      await node.newLogLines();

      // Held, released while the application refuses connections, then it starts.
      const retriedBefore = (await node.status()).counters.retried;
      await node.control("pause", "ttl=0");
      const pending = rawRequest(host, port, requestBytes(c));
      await node.held(1);
      await node.control("resume");
      let reply: RawReply | undefined;
      if (c.expect === "retried") {
        await waitFor("held again in the retry lane", async () => (await node.status()).counters.retried > retriedBefore).catch(async (e) => {
          assert.fail(`${e}; reply ${(await Promise.race([pending, new Promise((r) => setTimeout(r, 100))]) as RawReply | undefined)?.text?.slice(0, 100)}\n${(await node.newLogLines()).join("\n")}`);
        });
        await startApp();
        reply = await pending;
        assert.equal(reply.status, 200, reply.text.slice(0, 300));
        const got = await arrivals();
        assert.equal(got.length, 1, `arrivals: ${JSON.stringify(got.map((a) => a.head.split("\r\n")[0]))}`);
        // (Each request has its own $request_id: the reference's differs.)
        const norm = (head: string) => (c.requestIdHeader ? head.replace(/(\r\nX-Request-Id: )\S+/i, "$1<id>") : head);
        assert.equal(norm(got[0].head), norm(reference[0].head), "request line and headers as on the first try");
        assert.equal(got[0].body, reference[0].body, "the body as on the first try");
      } else {
        reply = await pending;
        assert.equal(reply.status, 502, reply.text.slice(0, 300));
        await startApp();
        assert.deepEqual(await arrivals(), [], "nothing sent again");
        assert.equal((await node.status()).counters.retried, retriedBefore, "not held again");
      }
      // Never sent to another application (the web upstream behind location /).
      assert.deepEqual((await node.arrivals()).ids, [], "the web upstream received it");
      // One $request_id for the request's whole life (its first hold and its retry).
      const lines = await node.newLogLines();
      const idsSeen = new Set(lines.flatMap((l) => [...l.matchAll(/request_id=(\S+)/g)].map((m) => m[1])));
      assert.equal(idsSeen.size, 1, `request ids in its log lines: ${[...idsSeen]}\n${lines.filter((l) => l.includes("request_id=")).join("\n")}`);
      if (c.expect === "refused") assert.ok(lines.some((l) => /not retried: /.test(l)), "the log says why it was not retried");
      if (c.requestIdHeader) {
        const sent = /\r\nX-Request-Id: (\S+)\r\n/i.exec(await arrivals().then((a) => a[0]?.head ?? ""))?.[1];
        assert.equal(sent, [...idsSeen][0], "X-Request-Id upstream is the id in its log lines");
      }
      await stopApp();
    });
  }

  it("try_files into a named location, the upstream never accepting: every try spent, then on_timeout's 503, never nginx's 500", async () => {
    // README: "no wiring this README allows runs into nginx's limit"; "intermission never
    // turns a request into a 500".
    const retriedBefore = (await node.status()).counters.retried;
    await node.control("pause", "ttl=0");
    const pending = rawRequest(host, port, Buffer.from("GET /tfdead/x?id=dead HTTP/1.1\r\nHost: front.example\r\nConnection: close\r\n\r\n", "latin1"));
    await node.held(1);
    await node.newLogLines();
    await node.control("resume");
    const reply = await pending;
    const lines = await node.newLogLines();
    assert.ok(!lines.some((l) => /redirection cycle/.test(l)), lines.filter((l) => /cycle/.test(l)).join("\n"));
    assert.equal(reply.status, 503, reply.text.slice(0, 300));
    const retried = (await node.status()).counters.retried - retriedBefore;
    assert.equal(retried, 2, "both retries were used");
    assert.ok(lines.some((l) => /failed at the upstream 3 times, not retried again/.test(l)), lines.join("\n"));
  });

  if (hooks === "location") {
    it("two redirects on the way that intermission sees: one retry only, then 503, never nginx's 500", async () => {
      // README: "no wiring this README allows runs into nginx's limit"; beyond its bound of
      // one redirect, the redirects intermission can see still lower the tries.
      const retriedBefore = (await node.status()).counters.retried;
      await node.control("pause", "ttl=0");
      const pending = rawRequest(host, port, Buffer.from("GET /tf2/x?id=two HTTP/1.1\r\nHost: front.example\r\nConnection: close\r\n\r\n", "latin1"));
      await node.held(1);
      await node.newLogLines();
      await node.control("resume");
      const reply = await pending;
      const lines = await node.newLogLines();
      assert.ok(!lines.some((l) => /redirection cycle/.test(l)), lines.filter((l) => /cycle/.test(l)).join("\n"));
      assert.equal(reply.status, 503, reply.text.slice(0, 300));
      assert.equal((await node.status()).counters.retried - retriedBefore, 1, "one retry");
      assert.ok(lines.some((l) => /failed at the upstream 2 times, not retried again/.test(l)), lines.join("\n"));
    });
  }
});
}

fidelitySuite("location", CASES.filter((c) => c.name !== "rid"));
// At server level access() also runs in the named locations and the retry location.
fidelitySuite("server", CASES.filter((c) => ["plain-encoded", "plain-slash", "api", "named", "body-file", "rid"].includes(c.name)));
