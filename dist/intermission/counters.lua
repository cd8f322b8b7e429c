local ____exports = {}
local observe
local ____shm = require("intermission.shm")
local zones = ____shm.zones
local num = ____shm.num
local UNHELD_PREFIX = ____shm.UNHELD_PREFIX
function observe(keys, kind, seconds)
    local zone = zones.counters
    do
        local i = 0
        while i < #____exports.HOLD_BUCKETS do
            if seconds <= ____exports.HOLD_BUCKETS[i + 1] then
                zone:incr(
                    ((keys.counterPrefix .. kind) .. "bucket|") .. tostring(i),
                    1,
                    0
                )
                break
            end
            i = i + 1
        end
    end
    zone:incr((keys.counterPrefix .. kind) .. "hold_count", 1, 0)
    zone:incr((keys.counterPrefix .. kind) .. "hold_sum", seconds, 0)
end
--- Every hold ends in exactly one outcome, as in Vitess's buffer:
--   held + retried = released + timed_out + aborted + maintenance + (held now)
-- retried: second holds of released requests whose upstream connection failed.
-- rejected: refused at once, never held (queue full, maintenance).
-- passed: the part of timed_out that on_timeout = "pass" forwarded.
-- Unplanned outages (outage.ts), outside the balance: outages started; outage_held, the
-- holds an outage caused (a never-held request whose connection failed, counted in
-- retried, or a new one held while it lasts, counted in held); fail_fast, the part of
-- rejected answered at once because an outage outlasted outage_hold.
____exports.COUNTER_NAMES = {
    "held",
    "released",
    "timed_out",
    "aborted",
    "maintenance",
    "rejected",
    "passed",
    "retried",
    "probe_failures",
    "outages",
    "outage_held",
    "fail_fast"
}
--- Upper bounds (seconds) of the hold-duration histogram buckets; +Inf is implied.
____exports.HOLD_BUCKETS = {
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120
}
function ____exports.count(keys, name)
    zones.counters:incr(keys.counterPrefix .. name, 1, 0)
end
--- Adds to a running total (seconds waited for readiness, ...).
function ____exports.add(keys, name, value)
    zones.counters:incr(keys.counterPrefix .. name, value, 0)
end
function ____exports.total(keys, name)
    return num(zones.counters, keys.counterPrefix .. name)
end
function ____exports.read(keys, name)
    return num(zones.counters, keys.counterPrefix .. name)
end
--- Records one hold that ended after `seconds`, whatever its outcome.
function ____exports.observeHold(keys, seconds)
    observe(keys, "", seconds)
end
--- Records one unplanned outage that lasted `seconds` (outage.ts).
function ____exports.observeOutage(keys, seconds)
    observe(keys, "outage_", seconds)
end
--- Cumulative bucket counts (Prometheus style), the total count and the sum.
function ____exports.holdHistogram(keys, kind)
    if kind == nil then
        kind = ""
    end
    local zone = zones.counters
    local cumulative = {}
    local running = 0
    do
        local i = 0
        while i < #____exports.HOLD_BUCKETS do
            running = running + num(
                zone,
                ((keys.counterPrefix .. kind) .. "bucket|") .. tostring(i)
            )
            cumulative[#cumulative + 1] = running
            i = i + 1
        end
    end
    return cumulative, num(zone, (keys.counterPrefix .. kind) .. "hold_count"), num(zone, (keys.counterPrefix .. kind) .. "hold_sum")
end
--- A request forwarded by the slow path because its own scope (and the node-wide scope
-- `default`) runs, while some scope on this node is paused, in maintenance or draining.
-- Under its own prefix, so that passedUnheldByScope finds every scope that ever had one,
-- scopes that were never paused (and so have no state) included.
function ____exports.passedUnheld(keys)
    zones.counters:incr(keys.unheld, 1, 0)
end
--- Every scope's passedUnheld count since nginx started (the zone outlives a reload). For
-- the control API only: it scans the counters zone's keys.
function ____exports.passedUnheldByScope()
    local out = {}
    local zone = zones.counters
    local prefixLength = #UNHELD_PREFIX
    for ____, key in ipairs(zone:get_keys(0)) do
        if string.sub(key, 1, prefixLength) == UNHELD_PREFIX then
            local v = zone:get(key)
            if type(v) == "number" then
                out[string.sub(key, prefixLength + 1)] = v
            end
        end
    end
    return out
end
return ____exports
