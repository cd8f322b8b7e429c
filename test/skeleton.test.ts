// The walking skeleton: pause, a request is held, resume, it arrives. Twice, by the
// JSON API and by the seed's GET /control toggle.
import { describe, it, before, after, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";

describe("walking skeleton", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ setup: { legacy_endpoints: true } });
  });
  after(async () => node?.stop());
  beforeEach(async () => node.reset());
  afterEach(async () => node.assertCleanLog());

  it("holds a request while paused and delivers it on resume (twice)", async () => {
    for (const round of [1, 2]) {
      const paused = await node.control("pause", "reason=skeleton");
      assert.equal(paused.status, 200, paused.body);
      assert.equal(paused.json().state, "paused");

      const held = node.send(`/?id=r${round}`);
      await node.held(1);
      const before = await node.arrivals();
      assert.ok(!before.ids.includes(`r${round}`), "a held request must not reach the upstream");

      const resumed = await node.control("resume");
      assert.equal(resumed.status, 200, resumed.body);
      const reply = await held.reply;
      assert.equal(reply.status, 200);
      assert.equal(reply.body.trim(), `ok r${round}`);

      const status = await node.status();
      assert.equal(status.state, "running");
      assert.equal(status.held, 0);
      assert.equal(status.counters.held, round);
      assert.equal(status.counters.released, round);
    }
    const log = await node.errorLog();
    assert.match(log, /intermission: hold request_id=[0-9a-f]{32} scope=default ticket=1/);
    assert.match(log, /intermission: leave request_id=[0-9a-f]{32} scope=default waited=\d+\.\d{3}s outcome=released/);
  });

  it("follows the seed's walkthrough: hit /control, hit /, hit /control", async () => {
    for (const round of [1, 2]) {
      const on = await node.get("/control");
      assert.equal(on.status, 200, on.body);
      assert.equal(on.json().state, "paused");
      const held = node.send(`/?id=seed${round}`);
      await node.held(1);
      const off = await node.get("/control");
      assert.equal(off.status, 200, off.body);
      assert.equal(off.json().previous, "paused");
      assert.equal((await held.reply).body.trim(), `ok seed${round}`);
    }
  });

  it("serves the seed's enable/disable toggles when legacy_endpoints is on, by GET only", async () => {
    for (let round = 1; round <= 2; round++) {
      const on = await node.get("/_intermission/enable");
      assert.equal(on.status, 200, on.body);
      assert.equal(on.json().state, "paused");
      const held = node.send(`/?id=legacy${round}`);
      await node.held(1);
      const off = await node.get("/_intermission/disable");
      assert.equal(off.status, 200, off.body);
      assert.equal(off.json().state, "running");
      assert.equal((await held.reply).status, 200);
      assert.equal((await node.control("enable")).status, 405, "POST to a GET toggle");
    }
  });
});
