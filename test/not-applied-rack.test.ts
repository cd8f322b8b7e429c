// The README's Rack middleware ("Not applied"), examples/not_applied.rb, for real: a Rack
// application on Debian's Ruby (WEBrick) uses it, behind intermission's nginx wired as the
// README says. While the application's "database" gives no connection, a request is
// answered "not applied" before the application runs; intermission holds it and sends it
// again, and once the database is back it is applied, once, with its method and body. The
// application's own 500 and 503 pages pass through unchanged, body and headers intact.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import path from "node:path";
import { GenericContainer, StartedNetwork, StartedTestContainer, Wait } from "testcontainers";
import { ensureImages, NginxNode, newNetwork, ROOT } from "./harness/node.ts";
import { get, send } from "./harness/http.ts";
import { RETRY_ON_ERROR, retryLocation } from "./harness/nginx-config.ts";

const RACK_IMAGE = "intermission-rack:latest";

/**
 * The application. /_test/* is its test door (outside the middleware): the database's
 * state, and what was tried and applied. Everything else goes through NotApplied, whose
 * check is the fake database's connect: it raises NoConnection while the database is down.
 */
const CONFIG_RU = `
require "digest"
require "json"
require_relative "not_applied"

class NoConnection < StandardError; end

module DB
  @lock = Mutex.new
  @up = true
  @connects = Hash.new(0)   # connection attempts per ?id=
  @applied = []             # "id METHOD size md5" of every request applied
  class << self
    attr_accessor :up
    attr_reader :lock, :connects, :applied
  end
  def self.connect(id)
    lock.synchronize { connects[id] += 1 }
    raise NoConnection, "no database connection" unless up
  end
end

Orders = lambda do |env|
  req = Rack::Request.new(env)
  case req.path_info
  when "/own500"
    [500, { "content-type" => "text/plain", "x-app" => "own page" }, ["the application's own 500 page\\n"]]
  when "/own503"
    [503, { "content-type" => "text/plain", "retry-after" => "42", "x-app" => "own page" }, ["the application's own 503 page\\n"]]
  else
    body = req.body ? (req.body.rewind; req.body.read) : ""
    line = "#{req.GET["id"]} #{req.request_method} #{body.bytesize} #{Digest::MD5.hexdigest(body)}"
    DB.lock.synchronize { DB.applied << line }
    [200, { "content-type" => "text/plain" }, ["applied #{line}\\n"]]
  end
end

Test = lambda do |env|
  req = Rack::Request.new(env)
  case req.path_info
  when "/db"
    DB.up = req.params["state"] == "up"
  when "/reset"
    DB.lock.synchronize { DB.connects.clear; DB.applied.clear }
  end
  DB.lock.synchronize do
    [200, { "content-type" => "application/json" }, [JSON.generate(up: DB.up, connects: DB.connects, applied: DB.applied)]]
  end
end

map "/_test" do
  run Test
end
map "/" do
  use(Class.new do
    # Tells the fake database which request connects (a real pool does not need this).
    def initialize(app) = @app = app
    def call(env)
      Thread.current[:order_id] = Rack::Request.new(env).GET["id"]
      @app.call(env)
    end
  end)
  use NotApplied, connect: -> { DB.connect(Thread.current[:order_id]) }, errors: [NoConnection]
  run Orders
end
`;

const SERVER_HOOKS = `
        header_filter_by_lua_block { require("intermission").header_filter() }
        log_by_lua_block           { require("intermission").log() }`;

/** The README's wiring, in front of the Rack application; /rack-intercept/ also intercepts the upstream's errors. */
const LOCATIONS = `
        location /rack/ {
            set $intermission_scope rack;
            access_by_lua_block { require("intermission").access() }
            proxy_pass http://rackapp:9292/;${RETRY_ON_ERROR}
        }
        location /rack-intercept/ {
            set $intermission_scope rack;
            access_by_lua_block { require("intermission").access() }
            proxy_intercept_errors on;
            proxy_pass http://rackapp:9292/;${RETRY_ON_ERROR}
        }${retryLocation()}`;

interface TestState {
  up: boolean;
  connects: Record<string, number>;
  applied: string[];
}

describe("\"not applied\" from a Rack application (examples/not_applied.rb) behind intermission", () => {
  let network: StartedNetwork;
  let rack: StartedTestContainer;
  let node: NginxNode;
  let door: string;

  const state = async (p = ""): Promise<TestState> => (await get(`${door}/_test/${p}`)).json();

  before(async () => {
    ensureImages();
    network = await newNetwork();
    rack = await new GenericContainer(RACK_IMAGE)
      .withNetwork(network)
      .withNetworkAliases("rackapp")
      .withCopyFilesToContainer([{ source: path.join(ROOT, "examples/not_applied.rb"), target: "/app/not_applied.rb" }])
      .withCopyContentToContainer([{ content: CONFIG_RU, target: "/app/config.ru" }])
      .withExposedPorts(9292)
      .withWaitStrategy(Wait.forHttp("/_test/", 9292).forStatusCode(200))
      .withStartupTimeout(60_000)
      .start();
    door = `http://${rack.getHost()}:${rack.getMappedPort(9292)}`;
    node = await NginxNode.start({
      network,
      // A request never held waits at most min(outage_hold, max_hold): its retries come
      // after a quarter, then half, of that (README "Not applied").
      setup: { max_hold: 30, outage_hold: 4 },
      serverDirectives: SERVER_HOOKS,
      extraLocations: LOCATIONS,
    });
  });
  after(async () => {
    await node?.stop();
    await rack?.stop({ timeout: 1 });
    await network?.stop();
  });
  afterEach(async () => {
    await state("db?state=up");
    await node.assertCleanLog();
  });

  it("holds a request the middleware answers \"not applied\" (no database connection) and sends it again: applied once, method and body kept, 200", async () => {
    await state("reset");
    const before = (await node.status("rack")).counters;
    await state("db?state=down");
    const body = "order=42&qty=1";
    const pending = send(node.url("/rack/orders?id=r1"), { method: "POST", body, headers: { "Content-Type": "application/x-www-form-urlencoded" } });
    // The first try reached the application, which could not connect and said so.
    for (let i = 0; (await state()).connects.r1 !== 1; i++) {
      assert.ok(i < 100, "the first try reached the application");
      await new Promise((r) => setTimeout(r, 50));
    }
    await state("db?state=up");
    const r = await pending.reply;
    const md5 = createHash("md5").update(body).digest("hex");
    assert.equal(r.status, 200, r.body);
    assert.equal(r.body, `applied r1 POST ${body.length} ${md5}\n`);
    const s = await state();
    assert.equal(s.connects.r1, 2, "sent again once, after the database came back");
    assert.deepEqual(s.applied, [`r1 POST ${body.length} ${md5}`], "applied once, with its method and body");
    const after = (await node.status("rack")).counters;
    assert.equal(after.retried - before.retried, 1, "held once more, on the retry lane");
    assert.equal(after.outages, before.outages, "not an outage: the application answered");
  });

  it("a database that stays down: every try is spent (two retries), then on_timeout's 503; nothing applied", async () => {
    await state("reset");
    await state("db?state=down");
    const r = await get(node.url("/rack/orders?id=r2"));
    assert.equal(r.status, 503, r.body);
    const s = await state();
    assert.equal(s.connects.r2, 3, "sent three times, no more");
    assert.deepEqual(s.applied, []);
  });

  for (const where of ["/rack/", "/rack-intercept/"]) {
    it(`the application's own 500 and 503 pages pass through unchanged (${where})`, async () => {
      await state("reset");
      const before = (await node.status("rack")).counters;
      const own500 = await get(node.url(`${where}own500?id=e1`));
      assert.equal(own500.status, 500);
      assert.equal(own500.body, "the application's own 500 page\n");
      assert.equal(own500.headers["x-app"], "own page");
      const own503 = await get(node.url(`${where}own503?id=e2`));
      assert.equal(own503.status, 503);
      assert.equal(own503.body, "the application's own 503 page\n");
      assert.equal(own503.headers["retry-after"], "42");
      assert.equal(own503.headers["x-app"], "own page");
      const s = await state();
      assert.deepEqual(s.connects, { e1: 1, e2: 1 }, "each sent once");
      const after = (await node.status("rack")).counters;
      assert.equal(after.retried, before.retried, "none held");
    });
  }
});
