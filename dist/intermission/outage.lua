local ____exports = {}
local proberKey, finish, prober, PROBER_LEASE, FIRST, MAX, CONNECT_TIMEOUT
local ____shm = require("intermission.shm")
local zones = ____shm.zones
local num = ____shm.num
local keysFor = ____shm.keysFor
local ensureScope = ____shm.ensureScope
local ____settings = require("intermission.settings")
local settings = ____settings.settings
local ____mode = require("intermission.mode")
local modeOf = ____mode.modeOf
local writeMode = ____mode.writeMode
local release = require("intermission.release")
local ready = require("intermission.ready")
local counters = require("intermission.counters")
local waiters = require("intermission.waiters")
function proberKey(keys)
    return keys.scope .. "|oprober"
end
--- Starts the scope's prober unless one runs on this node (a shared-dict add; the prober
-- refreshes it). Called at entry and by every request that meets the outage, so that a
-- prober lost with its worker is replaced.
function ____exports.ensureProber(keys)
    local mine = zones.state:safe_add(
        proberKey(keys),
        true,
        PROBER_LEASE
    )
    if not mine then
        return
    end
    local ok, err = ngx.timer.at(0, prober, keys.scope)
    if ok then
        return
    end
    zones.state:delete(proberKey(keys))
    ngx.log(
        ngx.ERR,
        (("intermission: cannot start the outage prober of scope " .. keys.scope) .. ": ") .. tostring(err)
    )
end
function finish(keys, where)
    release.withScopeLock(
        keys,
        function(k)
            if modeOf(k) ~= "outage" then
                return
            end
            local now = ngx.now()
            local lasted = now - num(zones.state, k.since)
            release.resumeLocked(k, now)
            counters.observeOutage(k, lasted)
            ngx.log(
                ngx.NOTICE,
                (((("intermission: audit action=outage-end scope=" .. k.scope) .. " upstream=") .. where) .. " seconds=") .. string.format("%.3f", lasted)
            )
        end
    )
    waiters.poke()
end
function prober(premature, scope)
    local keys = keysFor(scope)
    local addr = zones.state:get(keys.outageAddr)
    local host, port = ready.lastAddress(type(addr) == "string" and addr or "")
    local pause = FIRST
    while host ~= nil and not premature and not ngx.worker.exiting() do
        if modeOf(keys) ~= "outage" then
            break
        end
        zones.state:safe_set(
            proberKey(keys),
            true,
            PROBER_LEASE
        )
        local sock = ngx.socket.tcp()
        sock:settimeout(CONNECT_TIMEOUT)
        local ok = unpack(
            port ~= nil and ({sock:connect(host, port)}) or ({sock:connect(host)}),
            1,
            1
        )
        if ok ~= nil then
            sock:close()
            ngx.update_time()
            finish(keys, addr)
            break
        end
        counters.count(keys, "probe_failures")
        ngx.sleep(pause)
        pause = math.min(pause * 2, MAX)
    end
    zones.state:delete(proberKey(keys))
end
PROBER_LEASE = 5
FIRST = 0.05
MAX = 0.5
CONNECT_TIMEOUT = 500
--- Whether `addr` ($upstream_addr) names an address the prober can connect to.
function ____exports.probeable(addr)
    if addr == nil or addr == "" then
        return false
    end
    local host = ready.lastAddress(addr)
    return host ~= nil
end
--- Enters the outage (from running only; any other mode is left as it is: a pause or
-- maintenance already holds or answers, a release in progress has its own retry lane).
-- Returns the mode now, or undefined when the scope cannot be had (max_scopes, lock).
function ____exports.enter(keys, addr)
    local made, err = ensureScope(keys, settings.cfg.max_scopes)
    if not made then
        ngx.log(
            ngx.WARN,
            (("intermission: no outage hold for scope " .. keys.scope) .. ": ") .. tostring(err)
        )
        return nil
    end
    local mode, lockErr = release.withScopeLock(
        keys,
        function(k)
            local m = modeOf(k)
            if m ~= "running" then
                return m
            end
            local zone = zones.state
            local now = ngx.now()
            local okAddr = zone:safe_set(k.outageAddr, addr)
            if not okAddr then
                return m
            end
            zone:safe_set(k.since, now)
            zone:safe_set(k["until"], 0)
            zone:safe_set(k.reason, "")
            local ok = writeMode(k, "running", "outage")
            if not ok then
                return m
            end
            counters.count(k, "outages")
            ngx.log(
                ngx.NOTICE,
                (((("intermission: audit action=outage-start scope=" .. k.scope) .. " upstream=") .. addr) .. " outage_hold=") .. tostring(settings.cfg.outage_hold)
            )
            return "outage"
        end
    )
    if mode == nil then
        ngx.log(
            ngx.WARN,
            (("intermission: no outage hold for scope " .. keys.scope) .. ": ") .. tostring(lockErr)
        )
        return nil
    end
    if mode == "outage" then
        ____exports.ensureProber(keys)
    end
    return mode
end
--- An outage older than outage_hold: new requests are answered 503 at once.
function ____exports.failingFast(keys)
    return ngx.now() - num(zones.state, keys.since) >= settings.cfg.outage_hold
end
--- The failed address and how long the outage has lasted, for status.
function ____exports.describe(keys)
    local addr = zones.state:get(keys.outageAddr)
    return {
        upstream = type(addr) == "string" and addr or "",
        seconds = math.max(
            0,
            ngx.now() - num(zones.state, keys.since)
        ),
        fail_fast = ____exports.failingFast(keys)
    }
end
return ____exports
