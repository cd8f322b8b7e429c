local ____exports = {}
function ____exports.knownScopes()
    local out = {}
    local prefixLength = #____exports.SCOPE_MARK_PREFIX
    for ____, key in ipairs(____exports.zones.state:get_keys(0)) do
        if string.sub(key, 1, prefixLength) == ____exports.SCOPE_MARK_PREFIX then
            out[#out + 1] = string.sub(key, prefixLength + 1)
        end
    end
    table.sort(out)
    return out
end
--- Global key: how many scopes are not running (0: every scope runs). Created by setup(), never deleted.
____exports.BUSY_KEY = "busy"
--- Global key: serialises fleet start-up bookkeeping (lock.ts).
____exports.LOCK_KEY = "lock"
--- Global key: how many scopes exist (bounded by max_scopes).
____exports.SCOPE_COUNT_KEY = "scopes"
--- Global key, never deleted: every ticket and lease number a reclaimed scope ever issued
-- is below it (reclaim.ts). A scope made again starts its sequences here, so a ticket
-- number is never issued twice while a claim of the earlier one may still be read.
____exports.SEQ_BASE_KEY = "#seqbase"
--- Global key, fleet mode with fleet_release_window: this node's share of the fleet's window.
____exports.FLEET_SHARE_KEY = "#fleet|share"
--- Fleet mode: set by setup() on a cold start, requests wait for the first sync (fleet/sync.ts).
____exports.FLEET_PENDING_KEY = "#fleet|pending"
--- Fleet mode: the node has synced once (a reload finds it and does not wait again).
____exports.FLEET_SYNCED_KEY = "#fleet|synced"
--- Fleet mode: the last sync error.
____exports.FLEET_ERROR_KEY = "#fleet|error"
--- Counters zone: the per-scope count of requests passed unheld while another scope was stopped.
____exports.UNHELD_PREFIX = "#unheld|"
--- Marks a scope as known, for status and metrics.
____exports.SCOPE_MARK_PREFIX = "#scope|"
--- 0.2.0 and earlier: the mark's prefix, which the scope named "scope" shared.
local LEGACY_MARK_PREFIX = "scope|"
--- 0.2.0 and earlier: the fleet's keys, and what they are called now.
local LEGACY_FLEET_KEYS = {{"fleet|share", ____exports.FLEET_SHARE_KEY}, {"fleet|pending", ____exports.FLEET_PENDING_KEY}, {"fleet|synced", ____exports.FLEET_SYNCED_KEY}}
____exports.zones = {state = nil, queue = nil, counters = nil}
--- Binds the zones named by the `dict` option; called by setup() and again per worker.
function ____exports.bindZones(name)
    local state = ngx.shared[name]
    local queue = ngx.shared[name .. "_queue"]
    local counters = ngx.shared[name .. "_counters"]
    if state == nil or queue == nil or counters == nil then
        return false, ((((("lua_shared_dict \"" .. name) .. "\", \"") .. name) .. "_queue\" and \"") .. name) .. "_counters\" must be declared: include nginx/intermission.conf in the http block"
    end
    ____exports.zones.state = state
    ____exports.zones.queue = queue
    ____exports.zones.counters = counters
    return true, nil
end
local keyCache = {}
local cachedScopes = 0
--- Scopes come from nginx config, so there are few; the cap guards against a variable fed by clients.
local KEY_CACHE_LIMIT = 4096
local function makeKeys(scope)
    local p = scope .. "|"
    return {
        scope = scope,
        made = ____exports.SCOPE_MARK_PREFIX .. scope,
        mode = p .. "mode",
        since = p .. "since",
        ["until"] = p .. "until",
        reason = p .. "reason",
        lock = p .. "lock",
        dirty = p .. "dirty",
        main = {
            name = "main",
            seq = p .. "seq",
            head = p .. "head",
            ticketPrefix = p .. "w|",
            claimPrefix = p .. "c|"
        },
        retry = {
            name = "retry",
            seq = p .. "rseq",
            head = p .. "rhead",
            ticketPrefix = p .. "rw|",
            claimPrefix = p .. "rc|"
        },
        stop = p .. "stop",
        decided = p .. "decided",
        unclaimed = p .. "unclm",
        used = p .. "used",
        window = p .. "window",
        backoffUntil = p .. "boff",
        backoffStep = p .. "bstep",
        leaseSeq = p .. "lseq",
        leaseOldest = p .. "lold",
        okAt = p .. "okat",
        typical = p .. "typ",
        probes = p .. "probes",
        readyUntil = p .. "ready",
        outageAddr = p .. "oaddr",
        lastQueue = p .. "lastq",
        lastPause = p .. "lastp",
        leasePrefix = p .. "l|",
        counterPrefix = p,
        unheld = ____exports.UNHELD_PREFIX .. scope
    }
end
--- The scope that stands for the whole node: what a control request naming no scope gets.
____exports.NODE_SCOPE = "default"
function ____exports.keysFor(scope)
    local keys = keyCache[scope]
    if keys == nil then
        keys = makeKeys(scope)
        if cachedScopes < KEY_CACHE_LIMIT then
            keyCache[scope] = keys
            cachedScopes = cachedScopes + 1
        end
    end
    return keys
end
--- Reads a numeric key; absent (or not a number) reads as 0.
function ____exports.num(zone, key)
    local v = zone:get(key)
    return type(v) == "number" and v or 0
end
--- Whether the scope has state on this node (it was made, and not reclaimed since).
function ____exports.scopeExists(keys)
    return (____exports.zones.state:get(keys.made)) ~= nil
end
--- The ticket and lease sequences, and what counts against them: a scope starts them all
-- at the node's SEQ_BASE_KEY (decided at twice it: both lanes).
function ____exports.sequenceKeys(keys)
    return {
        keys.main.seq,
        keys.main.head,
        keys.retry.seq,
        keys.retry.head,
        keys.stop,
        keys.leaseSeq,
        keys.leaseOldest
    }
end
--- The other numeric keys every scope has from its creation on (0 then); incr() needs them to exist.
function ____exports.plainNumericKeys(keys)
    return {
        keys.dirty,
        keys.unclaimed,
        keys.used,
        keys.window,
        keys.backoffUntil,
        keys.backoffStep,
        keys.since,
        keys["until"],
        keys.readyUntil
    }
end
local function numericKeys(keys)
    local all = ____exports.sequenceKeys(keys)
    all[#all + 1] = keys.decided
    for ____, k in ipairs(____exports.plainNumericKeys(keys)) do
        all[#all + 1] = k
    end
    return all
end
--- Every key of the scope's in the state zone but its mark and its lock (reclaim.ts deletes them).
function ____exports.stateKeys(keys)
    local all = numericKeys(keys)
    for ____, k in ipairs({
        keys.mode,
        keys.reason,
        keys.okAt,
        keys.typical,
        keys.probes,
        keys.outageAddr
    }) do
        all[#all + 1] = k
    end
    return all
end
--- The probers' claims of the scope (ready.ts, outage.ts): while one is there, a timer works for the scope.
function ____exports.proberKeys(keys)
    return {"#prober|" .. keys.scope, "#connect|" .. keys.scope, keys.scope .. "|oprober"}
end
--- A shared-dict entry's headers: the rbtree node up to its color, and the shdict node up to its data.
local ENTRY_HEADER = 32 + 36
--- The longest scope name (params.validScope), the longest reason (params.ts) and mode.
local LONGEST_SCOPE = 64
local LONGEST_REASON = 500
local LONGEST_MODE = #"maintenance"
--- Node-wide keys: busy, lock, scopes, the control prefixes, the fleet's, one in-flight count per worker.
local ZONE_RESERVE = 256 * 1024
--- nginx's slab allocator hands out powers of two (from 8 bytes), whole 4 KiB pages above 2 KiB.
local function slabChunk(bytes)
    if bytes > 2048 then
        return math.ceil(bytes / 4096) * 4096
    end
    local chunk = 8
    while chunk < bytes do
        chunk = chunk * 2
    end
    return chunk
end
local function entryBytes(key, valueBytes)
    return slabChunk(ENTRY_HEADER + #key + valueBytes)
end
--- The most one scope takes of the state zone, with the longest name: its numeric keys
-- (8-byte values), the mark, the mode, the reason, and the keys that exist only for a
-- moment (the advance lock, the ready and connect probers'), all at once.
function ____exports.scopeBytes()
    local name = string.rep("x", LONGEST_SCOPE)
    local keys = makeKeys(name)
    local total = 0
    for ____, k in ipairs(numericKeys(keys)) do
        total = total + entryBytes(k, 8)
    end
    total = total + (entryBytes(keys.made, 1) + entryBytes(keys.mode, LONGEST_MODE) + entryBytes(keys.reason, LONGEST_REASON))
    total = total + (entryBytes(keys.lock, 1) + entryBytes("#prober|" .. name, 1) + entryBytes("#connect|" .. name, 1))
    return total
end
--- max_scopes bounds the state zone only if the zone can hold that many scopes at their
-- largest: setup() refuses to start otherwise (the reason), instead of a scope failing
-- with "no memory" one day. Each 4 KiB page also costs the allocator a 24-byte descriptor.
function ____exports.stateZoneTooSmall(maxScopes, dict)
    local needed = (maxScopes * ____exports.scopeBytes() + ZONE_RESERVE) * (1 + 24 / 4096)
    local capacity = ____exports.zones.state:capacity()
    if capacity >= needed then
        return nil
    end
    return ((((((((("option \"max_scopes\" = " .. tostring(maxScopes)) .. " needs a state zone of ") .. tostring(math.ceil(needed / 1024))) .. " KiB (") .. tostring(____exports.scopeBytes())) .. " bytes a scope at most), but lua_shared_dict ") .. dict) .. " has ") .. tostring(math.floor(capacity / 1024))) .. " KiB: make the zone larger or max_scopes smaller"
end
--- Keys of 0.2.0 and earlier, whose zones outlive a reload, under their names now: the
-- scope marks "scope|<name>" (one whose scope really has state: its numeric keys were
-- made before the mark) and the fleet's keys. The old ones are deleted, so that a scope
-- named "scope" or "fleet" never meets them.
local function upgradeKeys()
    local zone = ____exports.zones.state
    local prefixLength = #LEGACY_MARK_PREFIX
    for ____, key in ipairs(zone:get_keys(0)) do
        do
            if string.sub(key, 1, prefixLength) ~= LEGACY_MARK_PREFIX then
                goto __continue29
            end
            local scope = string.sub(key, prefixLength + 1)
            local value = zone:get(key)
            local seq = zone:get(scope .. "|seq")
            if value == true and type(seq) == "number" and (string.match(scope, "^[%w%._:%-]+$")) ~= nil then
                local ok, err = zone:safe_add(____exports.SCOPE_MARK_PREFIX .. scope, true)
                if not ok and err ~= "exists" then
                    ngx.log(
                        ngx.ERR,
                        (("intermission: cannot carry over scope " .. scope) .. " of an earlier version: ") .. tostring(err)
                    )
                    goto __continue29
                end
                zone:delete(key)
            end
        end
        ::__continue29::
    end
    for ____, ____value in ipairs(LEGACY_FLEET_KEYS) do
        local old = ____value[1]
        local now = ____value[2]
        do
            local value = zone:get(old)
            if value == nil then
                goto __continue34
            end
            local ok, err = zone:safe_add(now, value)
            if ok or err == "exists" then
                zone:delete(old)
            end
        end
        ::__continue34::
    end
end
--- Scopes made by an earlier version counted their held requests in `<scope>|held` and have
-- no `decided`; the zones outlive a reload, so setup() gives them one: the tickets issued
-- minus those held then. Without it incr(decided) would fail and every ticket ever issued
-- would count as held (a full queue at the next pause).
function ____exports.upgradeScopes()
    local zone = ____exports.zones.state
    upgradeKeys()
    for ____, scope in ipairs(____exports.knownScopes()) do
        do
            local keys = ____exports.keysFor(scope)
            zone:safe_add(keys.unclaimed, 0)
            if (zone:get(keys.decided)) ~= nil then
                goto __continue39
            end
            local heldThen = ____exports.num(zone, scope .. "|held")
            zone:safe_add(
                keys.decided,
                math.max(
                    0,
                    ____exports.num(zone, keys.main.seq) + ____exports.num(zone, keys.retry.seq) - heldThen
                )
            )
        end
        ::__continue39::
    end
end
return ____exports
