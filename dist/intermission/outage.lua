local ____exports = {}
local proberKey, claimed, keepProbingWhileExiting, finish, prober, PROBER_LEASE, LIVE, EXITING, UNCONFIRMED, FIRST, MAX, CONNECT_TIMEOUT
local ____shm = require("intermission.shm")
local zones = ____shm.zones
local num = ____shm.num
local keysFor = ____shm.keysFor
local NODE_SCOPE = ____shm.NODE_SCOPE
local ____reclaim = require("intermission.reclaim")
local createLocked = ____reclaim.createLocked
local ____settings = require("intermission.settings")
local settings = ____settings.settings
local ____mode = require("intermission.mode")
local modeOf = ____mode.modeOf
local writeMode = ____mode.writeMode
local release = require("intermission.release")
local ready = require("intermission.ready")
local counters = require("intermission.counters")
local waiters = require("intermission.waiters")
local liveness = require("intermission.liveness")
function proberKey(keys)
    return keys.scope .. "|oprober"
end
--- Starts the scope's prober unless one runs on this node. Called at entry, by every
-- request that meets the outage and by the watcher of every worker holding requests of
-- the scope. The claim is a shared-dict add; a claim whose worker is gone (kill -9) or
-- exiting is taken over at once, by one worker only (an add of a takeover key named after
-- the holder's pid). An exiting worker starts nothing (it cannot start timers): its own
-- running prober, or a live worker's, covers the scope.
function ____exports.ensureProber(keys)
    if ngx.worker.exiting() then
        return
    end
    local st = zones.state
    local key = proberKey(keys)
    local held, holder = st:get(key)
    if held ~= nil then
        local pid = holder
        if held % UNCONFIRMED ~= EXITING and not liveness.gone(
            pid,
            ngx.now()
        ) then
            return
        end
        if pid == liveness.me() then
            return
        end
        local taker = st:safe_add(
            (key .. "|") .. tostring(pid or 0),
            true,
            PROBER_LEASE
        )
        if not taker then
            return
        end
        local set = st:safe_set(
            key,
            LIVE + UNCONFIRMED,
            PROBER_LEASE,
            liveness.me()
        )
        if not set then
            return
        end
        ngx.log(
            ngx.NOTICE,
            ((((("intermission: outage prober of scope " .. keys.scope) .. " taken over from worker ") .. tostring(pid or 0)) .. " (") .. (held % UNCONFIRMED == EXITING and "exiting" or "gone")) .. ")"
        )
    else
        local mine = st:safe_add(
            key,
            LIVE + UNCONFIRMED,
            PROBER_LEASE,
            liveness.me()
        )
        if not mine then
            return
        end
    end
    local ok, err = ngx.timer.at(0, prober, keys.scope)
    if ok then
        return
    end
    st:delete(key)
    if ngx.worker.exiting() then
        return
    end
    ngx.log(
        ngx.ERR,
        (("intermission: cannot start the outage prober of scope " .. keys.scope) .. ": ") .. tostring(err)
    )
end
function claimed(keys)
    local held, holder = zones.state:get(proberKey(keys))
    return held ~= nil and holder == liveness.me()
end
function keepProbingWhileExiting(keys)
    if release.heldNow(keys) <= 0 then
        return false
    end
    local since = num(zones.state, keys.since)
    return ngx.now() < since + settings.cfg.outage_hold + settings.cfg.max_hold
end
function finish(keys, where)
    local ended = release.withScopeLock(
        keys,
        function(k)
            if modeOf(k) ~= "outage" then
                return true
            end
            local now = ngx.now()
            if k.scope ~= NODE_SCOPE and release.nodeStopped(now) then
                return false
            end
            local lasted = now - num(zones.state, k.since)
            release.resumeLocked(k, now)
            counters.observeOutage(k, lasted)
            ngx.log(
                ngx.NOTICE,
                (((("intermission: audit action=outage-end scope=" .. k.scope) .. " upstream=") .. where) .. " seconds=") .. string.format("%.3f", lasted)
            )
            return true
        end
    )
    waiters.poke()
    return ended == true
end
function prober(_premature, scope)
    local keys = keysFor(scope)
    local addr = zones.state:get(keys.outageAddr)
    local where = type(addr) == "string" and addr or ""
    local addresses = ready.addressesOf(where)
    local pause = FIRST
    local mine = true
    local confirmed = false
    while #addresses > 0 do
        do
            ngx.update_time()
            if modeOf(keys) ~= "outage" then
                break
            end
            if not claimed(keys) then
                mine = false
                break
            end
            local exiting = ngx.worker.exiting()
            if exiting and not keepProbingWhileExiting(keys) then
                break
            end
            zones.state:safe_set(
                proberKey(keys),
                (exiting and EXITING or LIVE) + (confirmed and 0 or UNCONFIRMED),
                PROBER_LEASE,
                liveness.me()
            )
            local open = false
            for ____, a in ipairs(addresses) do
                if ready.accepts(a, CONNECT_TIMEOUT) then
                    open = true
                    break
                end
            end
            if open then
                ngx.update_time()
                if finish(keys, where) then
                    break
                end
                ngx.sleep(MAX)
                goto __continue36
            end
            counters.count(keys, "probe_failures")
            if not confirmed then
                confirmed = true
                zones.state:safe_set(
                    proberKey(keys),
                    exiting and EXITING or LIVE,
                    PROBER_LEASE,
                    liveness.me()
                )
            end
            ngx.sleep(pause)
            pause = math.min(pause * 2, MAX)
        end
        ::__continue36::
    end
    if mine and claimed(keys) then
        zones.state:delete(proberKey(keys))
        release.advance(keys)
    end
end
PROBER_LEASE = 5
LIVE = 1
EXITING = 2
UNCONFIRMED = 10
FIRST = 0.05
MAX = 0.5
CONNECT_TIMEOUT = 500
--- Whether `addr` ($upstream_addr) names an address the prober can connect to.
function ____exports.probeable(addr)
    if addr == nil or addr == "" then
        return false
    end
    return #ready.addressesOf(addr) > 0
end
--- Enters the outage (from running only; any other mode is left as it is: a pause or
-- maintenance already holds or answers, a release in progress has its own retry lane).
-- Returns the mode now, or undefined when the scope cannot be had (max_scopes, lock).
function ____exports.enter(keys, addr)
    local mode, lockErr = release.withScopeLock(
        keys,
        function(k)
            local made, err = createLocked(k, settings.cfg.max_scopes)
            if not made then
                error(err, 0)
            end
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
--- Seconds a new request waits for a prober's first round (one connect, 0.5 s at most, per address).
local FIRST_ROUND = 1
--- How long a new request of the outage may be held: outage_hold while the outage is
-- younger; past it, 0 (answered 503 at once) once a prober on this node has seen it go on
-- (a round failed); while its prober has yet to try (started anew: UNCONFIRMED), the
-- first round's length, which ends the outage if the upstream is back.
function ____exports.holdSeconds(keys)
    if ngx.now() - num(zones.state, keys.since) < settings.cfg.outage_hold then
        return settings.cfg.outage_hold
    end
    local held = zones.state:get(proberKey(keys))
    return type(held) == "number" and held < UNCONFIRMED and 0 or FIRST_ROUND
end
--- An outage older than outage_hold, for a request whose own connection just failed: answered 503 at once.
function ____exports.outlasted(keys)
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
        fail_fast = ____exports.holdSeconds(keys) == 0
    }
end
--- For the watcher (waiters.setProbe): the prober a scope whose requests this worker holds waits for.
local function keepProbers(keys, mode)
    if mode == "outage" then
        ____exports.ensureProber(keys)
    else
        ready.ensureProbers(keys)
    end
end
waiters.setProbe(keepProbers)
return ____exports
