local ____exports = {}
local ____shm = require("intermission.shm")
local zones = ____shm.zones
local num = ____shm.num
local BUSY_KEY = ____shm.BUSY_KEY
local markScope = ____shm.markScope
local ____lock = require("intermission.lock")
local lock = ____lock.lock
local unlock = ____lock.unlock
local queue = require("intermission.queue")
--- Called after every transition, in the worker that made it (to wake its watcher).
____exports.listeners = {}
function ____exports.modeOf(keys)
    local m = zones.state:get(keys.mode)
    return m == nil and "running" or m
end
function ____exports.snapshot(keys)
    local zone = zones.state
    local reason = zone:get(keys.reason)
    return {
        mode = ____exports.modeOf(keys),
        since = num(zone, keys.since),
        ["until"] = num(zone, keys["until"]),
        reason = type(reason) == "string" and reason or ""
    }
end
--- Writes the mode and keeps the busy count right. Caller holds the lock.
local function writeMode(keys, from, to)
    local zone = zones.state
    if to == "running" then
        zone:delete(keys.mode)
    else
        zone:set(keys.mode, to)
    end
    if from == "running" and to ~= "running" then
        zone:incr(BUSY_KEY, 1, 0)
    elseif from ~= "running" and to == "running" then
        local left = zone:incr(BUSY_KEY, -1, 0)
        if left ~= nil and left <= 0 then
            zone:delete(BUSY_KEY)
        end
    end
end
local function withLock(fn)
    local token, err = lock()
    if token == nil then
        return nil, err
    end
    local ok, result = pcall(fn)
    unlock(token)
    if not ok then
        return nil, tostring(result)
    end
    return result, nil
end
local function notify(keys)
    local changed = ____exports.listeners.changed
    if changed ~= nil then
        changed(keys)
    end
end
--- Enters "paused" (hold new requests) or "maintenance" (answer 503; held requests too).
-- Doing it again refreshes the TTL and reason and reports `already`. ttl 0 = no expiry.
local function stop(keys, mode, ttl, reason)
    markScope(keys.scope)
    local change, err = withLock(function()
        local zone = zones.state
        local previous = ____exports.modeOf(keys)
        local now = ngx.now()
        if previous ~= mode then
            zone:set(keys.since, now)
        end
        zone:set(keys["until"], ttl > 0 and now + ttl or 0)
        zone:set(keys.reason, reason)
        writeMode(keys, previous, mode)
        return {
            previous = previous,
            mode = mode,
            already = previous == mode,
            snapshot = ____exports.snapshot(keys)
        }
    end)
    if change ~= nil then
        notify(keys)
    end
    return change, err
end
function ____exports.pause(keys, ttl, reason)
    return stop(keys, "paused", ttl, reason)
end
function ____exports.maintenance(keys, ttl, reason)
    return stop(keys, "maintenance", ttl, reason)
end
--- Caller holds the lock. Starts the release of the queue (or goes straight to running).
local function resumeLocked(keys)
    local zone = zones.state
    local previous = ____exports.modeOf(keys)
    if previous == "running" or previous == "draining" then
        return {
            previous = previous,
            mode = previous,
            already = true,
            snapshot = ____exports.snapshot(keys)
        }
    end
    zone:incr(keys.releaseGen, 1, 0)
    zone:set(
        keys.since,
        ngx.now()
    )
    zone:set(keys["until"], 0)
    zone:set(keys.reason, "")
    local next = queue.waiting(keys) > 0 and "draining" or "running"
    writeMode(keys, previous, next)
    return {
        previous = previous,
        mode = next,
        already = false,
        snapshot = ____exports.snapshot(keys)
    }
end
--- Release held requests in arrival order; also ends maintenance.
function ____exports.resume(keys)
    markScope(keys.scope)
    local change, err = withLock(function() return resumeLocked(keys) end)
    if change ~= nil and not change.already then
        queue.advance(keys)
        notify(keys)
    end
    return change, err
end
--- The mode as it is now, settling what time or the queue has decided: an expired
-- pause resumes, a finished drain becomes running. May take the lock (yields) only
-- when something must change.
function ____exports.settle(keys)
    local zone = zones.state
    local mode = ____exports.modeOf(keys)
    if mode == "paused" or mode == "maintenance" then
        local ____until = num(zone, keys["until"])
        if ____until > 0 and ngx.now() >= ____until then
            local change, err = withLock(function()
                local renewed = num(zones.state, keys["until"])
                if ____exports.modeOf(keys) ~= mode or renewed == 0 or ngx.now() < renewed then
                    return nil
                end
                return resumeLocked(keys)
            end)
            if change ~= nil and not change.already then
                ngx.log(ngx.NOTICE, (("intermission: audit action=auto-resume scope=" .. keys.scope) .. " reason=ttl-expired was=") .. mode)
                queue.advance(keys)
                notify(keys)
            elseif err ~= nil then
                ngx.log(ngx.ERR, (((("intermission: cannot resume expired " .. mode) .. " of scope ") .. keys.scope) .. ": ") .. err)
            end
            return ____exports.modeOf(keys)
        end
        return mode
    end
    if mode == "draining" and queue.waiting(keys) <= 0 then
        withLock(function()
            if ____exports.modeOf(keys) == "draining" and queue.waiting(keys) <= 0 then
                writeMode(keys, "draining", "running")
            end
        end)
        return ____exports.modeOf(keys)
    end
    return mode
end
return ____exports
