// The per-request record store (src/intermission/record.ts), driven inside a real nginx
// with synthetic request keys, so that the rare paths run on purpose: a bucket that is
// full sends records to the Lua map, and every lookup, re-entry check and removal must
// still find them there. (Reaching a full bucket with real requests takes thousands of
// requests in flight in one worker.)
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";
import { waitFor } from "./harness/http.ts";

const PROBE = `
        location = /_t/record {
            content_by_lua_block {
                local record = require("intermission.record")
                local cjson = require("cjson")
                -- Keys 16 x 1024 apart land in one bucket of 4 slots.
                local base, step = 140000000000000, 16 * 1024
                local out = {}
                local function key(n) return base + n * step end
                for n = 1, 6 do out["new" .. n] = record.recordIfNew(key(n), 1000 + n) end
                out.mapped_after_six = record.anyMapped()
                for n = 1, 6 do
                    out["again" .. n] = record.recordIfNew(key(n), 2000 + n)
                    out["start" .. n] = record.lookup(key(n))
                end
                -- log() on the hot path: a slot record goes at once; a mapped one is not there.
                out.forget_slot = record.forgetForwarded(key(1))
                out.forget_mapped = record.forgetForwarded(key(5))
                out.lookup_forgotten = record.lookup(key(1)) == nil
                -- The slot freed above is used again before the map.
                out.new7 = record.recordIfNew(key(7), 1007)
                out.start7 = record.lookup(key(7))
                record.forget(key(5))
                record.forget(key(6))
                out.mapped_after_forget = record.anyMapped()
                out.lookup5_gone = record.lookup(key(5)) == nil
                -- A slow-path Record replaces a forwarded slot, and goes with forget().
                record.remember(key(2), { state = "holding", start = 3002 })
                local rec = record.lookup(key(2))
                out.record_state = type(rec) == "table" and rec.state or tostring(rec)
                out.mapped_with_record = record.anyMapped()
                out.known_with_record = record.recordIfNew(key(2), 4002)
                record.forget(key(2))
                out.mapped_at_end = record.anyMapped()
                for _, n in ipairs({ 3, 4, 7 }) do record.forget(key(n)) end
                out.all_gone = record.lookup(key(3)) == nil and record.lookup(key(4)) == nil and record.lookup(key(7)) == nil
                ngx.say(cjson.encode(out))
            }
        }`;

describe("the record store", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ workers: 1, extraLocations: PROBE });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("keeps every record of a full bucket (the overflow goes to the map) and forgets each once", async () => {
    const r = await node.get("/_t/record");
    assert.equal(r.status, 200, r.body);
    const out = JSON.parse(r.body);
    for (let n = 1; n <= 6; n++) {
      assert.equal(out[`new${n}`], true, `key ${n} is new`);
      assert.equal(out[`again${n}`], false, `key ${n} is known (a redirect), whichever store holds it`);
      assert.equal(out[`start${n}`], 1000 + n, `key ${n} keeps its first start time`);
    }
    assert.equal(out.mapped_after_six, true, "the fifth and sixth went to the map");
    assert.equal(out.forget_slot, true);
    assert.equal(out.forget_mapped, false, "the hot path's forget does not see the map (log() looks there next)");
    assert.equal(out.lookup_forgotten, true);
    assert.equal(out.new7, true);
    assert.equal(out.start7, 1007);
    assert.equal(out.mapped_after_forget, false, "the map is empty again: header_filter and log skip it");
    assert.equal(out.lookup5_gone, true);
    assert.equal(out.record_state, "holding");
    assert.equal(out.mapped_with_record, true);
    assert.equal(out.known_with_record, false);
    assert.equal(out.mapped_at_end, false);
    assert.equal(out.all_gone, true);
  });

  it("requests through the hooks leave nothing behind: in_flight 0, and the next pause holds", async () => {
    const replies = await Promise.all(Array.from({ length: 50 }, (_, i) => node.get(`/?id=r${i}&delay=0.2`)));
    for (const r of replies) assert.equal(r.status, 200);
    // A worker shows its 0 within 0.2 s of its last request (see inflight.ts).
    await waitFor("in_flight 0", async () => (await node.status()).in_flight === 0, 2000);
    const drained = (await node.control("pause", "drain=2")).json();
    assert.equal(drained.drained, true, JSON.stringify(drained));
    const held = node.send("/?id=held");
    await node.held(1);
    await node.control("resume");
    assert.equal((await held.reply).status, 200);
  });
});
