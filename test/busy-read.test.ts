// The hot path's one shared-dict read (src/intermission/busy.ts) calls ngx_lua's C
// function directly instead of dict:get(). Driven inside a real nginx with the busy
// count set to every kind of value a shared dict can hold: only the number 0 lets a
// request through unheld, a string longer than the read's buffer (which the C function
// copies into memory it allocates) is freed without harm, and the fallback through
// dict:get() answers the same.
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { NginxNode } from "./harness/node.ts";

const PROBE = `
        location = /_t/busy {
            content_by_lua_block {
                local busy = require("intermission.busy")
                local zone = require("intermission.shm").zones.state
                local cjson = require("cjson")
                local function reads()
                    local r = {}
                    -- Each other kind of value is read right after a 0, so that a read
                    -- that took the last number read for this value's would say 0.
                    local function after_zero(value)
                        zone:set("busy", 0)
                        assert(busy.allRunning())
                        zone:set("busy", value)
                        return busy.allRunning()
                    end
                    zone:set("busy", 0);                  r.zero = busy.allRunning()
                    zone:incr("busy", 2);                 r.two = busy.allRunning()
                    zone:incr("busy", -2);                r.zero_again = busy.allRunning()
                    r.fraction = after_zero(0.5)
                    r.string_zero = after_zero("0")
                    r.long_string = after_zero(string.rep("x", 100))
                    r.boolean = after_zero(false)
                    -- The same read many times over a long string: what the C function
                    -- allocated is freed each time (a double free or a free of the read's
                    -- own buffer would take the worker down).
                    zone:set("busy", string.rep("y", 5000))
                    local any = false
                    for _ = 1, 2000 do any = any or busy.allRunning() end
                    r.long_string_repeated = any
                    zone:set("busy", 0);                  r.zero_at_end = busy.allRunning()
                    return r
                end
                local out = { direct = reads() }
                -- No userdata behind the zone: the read falls back to dict:get().
                busy.bindBusy({ get = function(_, k) return zone:get(k) end })
                out.fallback = reads()
                busy.bindBusy(zone)
                out.rebound = busy.allRunning()
                ngx.say(cjson.encode(out))
            }
        }`;

describe("the hot path's busy read", () => {
  let node: NginxNode;
  before(async () => {
    node = await NginxNode.start({ workers: 1, extraLocations: PROBE });
  });
  after(async () => node?.stop());
  afterEach(async () => node.assertCleanLog());

  it("lets a request through only on the number 0, whatever else the key holds, directly and through dict:get()", async () => {
    const r = await node.get("/_t/busy");
    assert.equal(r.status, 200, r.body);
    const out = JSON.parse(r.body);
    for (const way of ["direct", "fallback"]) {
      const x = out[way];
      assert.equal(x.zero, true, `${way}: 0 is every scope running`);
      assert.equal(x.two, false, `${way}: a count of busy scopes holds`);
      assert.equal(x.zero_again, true, `${way}: back to 0`);
      assert.equal(x.fraction, false, `${way}: 0.5 is not 0`);
      assert.equal(x.long_string, false, `${way}: a long string is not 0`);
      assert.equal(x.string_zero, false, `${way}: the string "0" is not the number 0`);
      assert.equal(x.boolean, false, `${way}: false is not 0`);
      assert.equal(x.long_string_repeated, false, `${way}: 2,000 reads of a long string`);
      assert.equal(x.zero_at_end, true, `${way}: 0 again`);
    }
    assert.equal(out.rebound, true);
    // The node still serves and holds: the worker survived every read above.
    assert.equal((await node.get("/?id=after")).status, 200);
    await node.control("pause");
    const held = node.send("/?id=held");
    await node.held(1);
    await node.control("resume");
    assert.equal((await held.reply).status, 200);
  });
});
