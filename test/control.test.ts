// The control API under attack and in normal use: every bad input is a 400 (or 401,
// 404, 405) with a JSON error naming the field, and leaves the state as it was.
import { describe, it, before, after, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";
import { get, post, send, Reply, waitFor } from "./harness/http.ts";

const TOKEN = "s3cret-token-0123456789";
const AUTH = { Authorization: `Bearer ${TOKEN}` };

function assertJsonError(r: Reply, status: number, field?: string): void {
  assert.equal(r.status, status, r.body);
  assert.match(String(r.headers["content-type"]), /application\/json/);
  const body = r.json();
  assert.equal(typeof body.error, "string");
  if (field !== undefined) assert.equal(body.field, field, r.body);
}

describe("control API with a token", () => {
  let node: NginxNode;
  const api = (p: string) => node.url(`/_intermission/${p}`);
  const state = async () => (await get(api("status"), { headers: AUTH })).json().state;

  before(async () => {
    node = await NginxNode.start({ setup: { control_token: TOKEN, legacy_endpoints: false } });
    node.controlHeaders = AUTH;
  });
  after(async () => node?.stop());
  beforeEach(async () => {
    assert.equal((await post(api("resume"), undefined, AUTH)).status, 200);
  });
  afterEach(async () => node.assertCleanLog());

  it("refuses a missing or wrong token with 401 and changes nothing", async () => {
    const attempts: Record<string, string>[] = [{}, { Authorization: "Bearer wrong-token-0123456789" }, { Authorization: TOKEN },
      { Authorization: `Bearer ${TOKEN}x` }, { Authorization: `Basic ${TOKEN}` }];
    for (const headers of attempts) {
      for (const action of ["pause", "maintenance"]) {
        const r = await post(api(action), undefined, headers);
        assertJsonError(r, 401);
        assert.match(String(r.headers["www-authenticate"]), /Bearer/);
      }
      assertJsonError(await get(api("status"), { headers }), 401);
      assertJsonError(await get(api("metrics"), { headers }), 401);
    }
    assert.equal(await state(), "running");
    assert.equal((await post(api("pause"), undefined, AUTH)).status, 200);
    assert.equal(await state(), "paused");
    assertJsonError(await post(api("resume"), undefined, {}), 401);
    assert.equal(await state(), "paused");
  });

  it("answers 405 to mutations by GET, and 404 to unknown actions", async () => {
    for (const action of ["pause", "resume", "maintenance"]) {
      for (let i = 0; i < 2; i++) {
        const r = await get(api(action), { headers: AUTH });
        assertJsonError(r, 405);
        assert.equal(r.headers.allow, "POST");
      }
    }
    assert.equal(await state(), "running");
    assertJsonError(await post(api("status"), undefined, AUTH), 405);
    assertJsonError(await get(api("frobnicate"), { headers: AUTH }), 404);
    assertJsonError(await post(api("frobnicate"), undefined, AUTH), 404);
    // The seed's toggles are off unless legacy_endpoints = true.
    assertJsonError(await get(api("enable"), { headers: AUTH }), 404);
    assertJsonError(await get(node.url("/control"), { headers: AUTH }), 404);
    assert.equal(await state(), "running");
  });

  it("rejects bad ttl, drain, scope and reason with 400 naming the field", async () => {
    const bad: [string, string][] = [
      ["ttl=abc", "ttl"], ["ttl=-5", "ttl"], ["ttl=0x10", "ttl"], ["ttl=1e3", "ttl"], ["ttl=99999999999", "ttl"],
      ["ttl=", "ttl"], ["ttl", "ttl"], ["ttl=1&ttl=2", "ttl"], ["ttl=%201", "ttl"], ["ttl=inf", "ttl"], ["ttl=nan", "ttl"],
      ["drain=abc", "drain"], ["drain=100000", "drain"],
      [`scope=${"a".repeat(65)}`, "scope"], ["scope=a%0Ab", "scope"], ["scope=a%00b", "scope"], ["scope=a%20b", "scope"],
      ["scope=", "scope"], [`reason=${"r".repeat(501)}`, "reason"], ["colour=blue", "colour"],
    ];
    for (const [query, field] of bad) {
      assertJsonError(await post(api(`pause?${query}`), undefined, AUTH), 400, field);
      assert.equal(await state(), "running", `state changed by pause?${query}`);
    }
    assertJsonError(await post(api("resume?ttl=5"), undefined, AUTH), 400, "ttl");
    assertJsonError(await post(api("maintenance?drain=5"), undefined, AUTH), 400, "drain");
  });

  it("rejects malformed and non-object JSON bodies", async () => {
    const json = { ...AUTH, "Content-Type": "application/json" };
    for (const body of ["{", "{\"ttl\": }", "[1,2]", "\"text\"", "{\"ttl\": \"abc\"}", "{\"ttl\": -1}", "{\"ttl\": 1e30}",
      "{\"scope\": 5}", "{\"reason\": [\"a\"]}", "{\"ttl\": null}"]) {
      const r = await post(api("pause"), body, json);
      assertJsonError(r, 400);
      assert.equal(await state(), "running", `state changed by body ${body}`);
    }
  });

  it("accepts parameters as query, form or JSON, and echoes any reason as valid JSON", async () => {
    const reason = "swap \"primary\" ←\n\ttab \\ back\u0001slash </script>";
    const viaJson = await post(api("pause"), JSON.stringify({ ttl: 30, reason, scope: "default" }),
      { ...AUTH, "Content-Type": "application/json" });
    assert.equal(viaJson.status, 200, viaJson.body);
    assert.equal(viaJson.json().reason, reason);
    assert.equal(viaJson.json().already, false);
    const until1 = viaJson.json().until;

    // A second pause is idempotent: reports already, refreshes TTL and reason.
    const viaForm = await post(api("pause"), "ttl=60&reason=second", AUTH);
    assert.equal(viaForm.status, 200, viaForm.body);
    assert.equal(viaForm.json().already, true);
    assert.equal(viaForm.json().reason, "second");
    assert.ok(viaForm.json().until > until1 + 20, "the TTL was refreshed");
    assert.equal(viaForm.json().since, viaJson.json().since, "since is when the pause began");

    const status = (await get(api("status?scope=default"), { headers: AUTH })).json();
    assert.equal(status.reason, "second");
    const resumed = await post(api("resume"), undefined, AUTH);
    assert.equal(resumed.json().already, false);
    const again = await post(api("resume"), undefined, AUTH);
    assert.equal(again.json().already, true, "a second resume changes nothing");
    const log = await node.errorLog();
    assert.match(log, /audit action=pause scope=default reason="swap \\x22primary\\x22 ←\\x0a\\x09tab \\x5c back\\x01slash <\/script>" client=\S+ ttl=30/);
    assert.match(log, /audit action=resume scope=default reason="" client=\S+ held=0/);
  });

  it("drain waits for in-flight requests and reports whether it got there", async () => {
    const slow = send(node.url("/?id=slow&delay=1"));
    await waitFor("the slow request at the upstream", async () => (await node.arrivals()).active === 1);
    const t0 = Date.now();
    const drained = await post(api("pause?drain=5"), undefined, AUTH);
    assert.equal(drained.status, 200, drained.body);
    assert.equal(drained.json().drained, true);
    assert.equal(drained.json().in_flight, 0);
    assert.ok(Date.now() - t0 >= 500, "it waited for the slow request");
    assert.equal((await slow.reply).status, 200);
    await post(api("resume"), undefined, AUTH);

    const slower = send(node.url("/?id=slower&delay=3"));
    await waitFor("the slower request at the upstream", async () => (await node.arrivals()).active === 1);
    const notDrained = await post(api("pause?drain=0.5"), undefined, AUTH);
    assert.equal(notDrained.json().drained, false);
    assert.equal(notDrained.json().in_flight, 1);
    const status = (await get(api("status"), { headers: AUTH })).json();
    assert.equal(status.in_flight, 1);
    await post(api("resume"), undefined, AUTH);
    assert.equal((await slower.reply).status, 200);
  });

  it("serves Prometheus metrics with states, gauges, counters and a histogram", async () => {
    await post(api("pause"), undefined, AUTH);
    const held = send(node.url("/?id=m1"));
    await node.held(1);
    await post(api("resume"), undefined, AUTH);
    await held.reply;
    for (let i = 0; i < 2; i++) {
      const r = await get(api("metrics"), { headers: AUTH });
      assert.equal(r.status, 200);
      assert.match(String(r.headers["content-type"]), /text\/plain/);
      assert.match(r.body, /^# TYPE intermission_state gauge$/m);
      assert.match(r.body, /^intermission_state\{scope="default",state="running"\} 1$/m);
      assert.match(r.body, /^intermission_held\{scope="default"\} 0$/m);
      assert.match(r.body, /^intermission_in_flight \d+$/m);
      assert.match(r.body, /^intermission_requests_total\{scope="default",outcome="released"\} [1-9]\d*$/m);
      assert.match(r.body, /^# TYPE intermission_hold_duration_seconds histogram$/m);
      assert.match(r.body, /^intermission_hold_duration_seconds_bucket\{scope="default",le="\+Inf"\} [1-9]\d*$/m);
      assert.match(r.body, /^intermission_hold_duration_seconds_count\{scope="default"\} [1-9]\d*$/m);
    }
  });
});
