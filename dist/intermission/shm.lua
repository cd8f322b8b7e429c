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
--- Global key, fleet mode with fleet_release_window: this node's share of the fleet's window.
____exports.FLEET_SHARE_KEY = "fleet|share"
--- Counters zone: the per-scope count of requests passed unheld while another scope was stopped.
____exports.UNHELD_PREFIX = "unheld|"
--- Marks a scope as known, for status and metrics.
____exports.SCOPE_MARK_PREFIX = "scope|"
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
        used = p .. "used",
        window = p .. "window",
        backoffUntil = p .. "boff",
        backoffStep = p .. "bstep",
        leaseSeq = p .. "lseq",
        leaseOldest = p .. "lold",
        readyUntil = p .. "ready",
        outageAddr = p .. "oaddr",
        lastQueue = p .. "lastq",
        lastPause = p .. "lastp",
        leasePrefix = p .. "l|",
        counterPrefix = p,
        unheld = ____exports.UNHELD_PREFIX .. scope
    }
end
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
--- Whether the scope has been created on this node (it has state).
function ____exports.scopeExists(keys)
    return (____exports.zones.state:get(keys.made)) ~= nil
end
--- The numeric keys every scope has from its creation on; incr() needs them to exist.
local function numericKeys(keys)
    return {
        keys.dirty,
        keys.main.seq,
        keys.main.head,
        keys.retry.seq,
        keys.retry.head,
        keys.stop,
        keys.decided,
        keys.used,
        keys.window,
        keys.backoffUntil,
        keys.backoffStep,
        keys.leaseSeq,
        keys.leaseOldest,
        keys.since,
        keys["until"],
        keys.readyUntil,
        keys.lastQueue,
        keys.lastPause
    }
end
--- Creates the scope's state on first use, within the max_scopes bound. The bound keeps
-- the state zone from ever filling up: a scope beyond it is refused and changes nothing.
function ____exports.ensureScope(keys, maxScopes)
    local zone = ____exports.zones.state
    if (zone:get(keys.made)) ~= nil then
        return true, nil
    end
    zone:safe_add(____exports.SCOPE_COUNT_KEY, 0)
    local count, err = zone:incr(____exports.SCOPE_COUNT_KEY, 1)
    if count == nil then
        return false, "cannot count scopes: " .. tostring(err)
    end
    if count > maxScopes then
        zone:incr(____exports.SCOPE_COUNT_KEY, -1)
        return false, "too many scopes: this node keeps at most max_scopes = " .. tostring(maxScopes)
    end
    for ____, k in ipairs(numericKeys(keys)) do
        local ok, addErr = zone:safe_add(k, 0)
        if not ok and addErr ~= "exists" then
            zone:incr(____exports.SCOPE_COUNT_KEY, -1)
            return false, (("cannot create scope " .. keys.scope) .. ": ") .. tostring(addErr)
        end
    end
    local added, markErr = zone:safe_add(keys.made, true)
    if not added then
        zone:incr(____exports.SCOPE_COUNT_KEY, -1)
        if markErr ~= "exists" then
            return false, (("cannot create scope " .. keys.scope) .. ": ") .. tostring(markErr)
        end
    end
    return true, nil
end
--- Scopes made by an earlier version counted their held requests in `<scope>|held` and have
-- no `decided`; the zones outlive a reload, so setup() gives them one: the tickets issued
-- minus those held then. Without it incr(decided) would fail and every ticket ever issued
-- would count as held (a full queue at the next pause).
function ____exports.upgradeScopes()
    local zone = ____exports.zones.state
    for ____, scope in ipairs(____exports.knownScopes()) do
        do
            local keys = ____exports.keysFor(scope)
            if (zone:get(keys.decided)) ~= nil then
                goto __continue21
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
        ::__continue21::
    end
end
return ____exports
