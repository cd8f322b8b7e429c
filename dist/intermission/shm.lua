local ____exports = {}
--- Global key: how many scopes are not running. Absent or 0: every scope runs.
____exports.BUSY_KEY = "busy"
--- Global key: serialises state transitions.
____exports.LOCK_KEY = "lock"
--- Marks a scope as known, for status and metrics.
____exports.SCOPE_MARK_PREFIX = "scope|"
____exports.zones = {state = nil, queue = nil}
--- Binds the zones named by the `dict` option; called by setup() and again per worker.
function ____exports.bindZones(name)
    local state = ngx.shared[name]
    local queue = ngx.shared[name .. "_queue"]
    if state == nil or queue == nil then
        return false, ((("lua_shared_dict \"" .. name) .. "\" and \"") .. name) .. "_queue\" must be declared: include nginx/intermission.conf in the http block"
    end
    ____exports.zones.state = state
    ____exports.zones.queue = queue
    return true, nil
end
local keyCache = {}
local cachedScopes = 0
--- Scopes come from nginx config, so there are few; the cap guards against a variable fed by clients.
local KEY_CACHE_LIMIT = 1000
local function makeKeys(scope)
    local p = scope .. "|"
    return {
        scope = scope,
        mode = p .. "mode",
        since = p .. "since",
        ["until"] = p .. "until",
        reason = p .. "reason",
        releaseGen = p .. "rgen",
        seq = p .. "seq",
        grant = p .. "grant",
        held = p .. "held",
        slotsPrefix = p .. "slots|",
        positionPrefix = p .. "p|",
        claimPrefix = p .. "c|",
        counterPrefix = p .. "n|"
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
--- Records that a scope exists so status and metrics can list it.
function ____exports.markScope(scope)
    ____exports.zones.state:set(____exports.SCOPE_MARK_PREFIX .. scope, true)
end
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
return ____exports
