local ____exports = {}
local running
local ____shm = require("intermission.shm")
local zones = ____shm.zones
local num = ____shm.num
local scopeExists = ____shm.scopeExists
local ____reclaim = require("intermission.reclaim")
local createLocked = ____reclaim.createLocked
local ____settings = require("intermission.settings")
local settings = ____settings.settings
local ____mode = require("intermission.mode")
local modeOf = ____mode.modeOf
local writeMode = ____mode.writeMode
local release = require("intermission.release")
local waiters = require("intermission.waiters")
local persist = require("intermission.persist")
function running()
    local snap = {mode = "running", since = 0, ["until"] = 0, reason = ""}
    return {previous = "running", mode = "running", already = true, snapshot = snap}
end
____exports.modeOf = modeOf
function ____exports.snapshot(keys)
    local zone = zones.state
    local reason = zone:get(keys.reason)
    return {
        mode = modeOf(keys),
        since = num(zone, keys.since),
        ["until"] = num(zone, keys["until"]),
        reason = type(reason) == "string" and reason or ""
    }
end
--- After every transition, in the worker that made it: its watcher posts the waiters the
-- change lets go now, instead of at its next look.
local function notify(_keys)
    waiters.poke()
end
--- Runs fn under the scope's lock. `create`: the scope's state is made there first if it
-- has none (max_scopes applies; reclaim.ts makes and reclaims only under the lock);
-- otherwise a scope with no state (never made, or reclaimed) is running and fn is not run.
local function transition(keys, create, fn)
    local change, lockErr = release.withScopeLock(
        keys,
        function(k)
            if not create then
                return scopeExists(k) and fn(k) or running()
            end
            local made, err = createLocked(k, settings.cfg.max_scopes)
            if not made then
                error(err, 0)
            end
            return fn(k)
        end
    )
    if change ~= nil then
        notify(keys)
        local fileErr = persist.save()
        if fileErr ~= nil then
            change.stateFileError = fileErr
        end
    end
    return change, lockErr
end
--- Enters "paused" (hold new requests) or "maintenance" (answer 503; held requests too).
-- Doing it again refreshes the TTL and reason and reports `already`. ttl 0 = no expiry.
local function stop(keys, mode, ttl, reason)
    return transition(
        keys,
        true,
        function(k)
            local zone = zones.state
            local previous = modeOf(k)
            local now = ngx.now()
            if previous ~= mode then
                zone:safe_set(k.since, now)
            end
            zone:safe_set(k["until"], ttl > 0 and now + ttl or 0)
            zone:safe_set(k.reason, reason)
            writeMode(k, previous, mode)
            return {
                previous = previous,
                mode = mode,
                already = previous == mode,
                snapshot = ____exports.snapshot(k)
            }
        end
    )
end
function ____exports.pause(keys, ttl, reason)
    return stop(keys, "paused", ttl, reason)
end
function ____exports.maintenance(keys, ttl, reason)
    return stop(keys, "maintenance", ttl, reason)
end
--- Release held requests in arrival order; also ends maintenance.
function ____exports.resume(keys)
    if not scopeExists(keys) then
        return running(), nil
    end
    return transition(
        keys,
        false,
        function(k)
            local previous = modeOf(k)
            local mode = release.resumeLocked(
                k,
                ngx.now()
            )
            return {
                previous = previous,
                mode = mode,
                already = previous == "running" or previous == "draining",
                snapshot = ____exports.snapshot(k)
            }
        end
    )
end
--- The mode as it is now, settling what time has decided (an expired pause resumes).
-- Never yields.
function ____exports.settle(keys)
    local mode = modeOf(keys)
    if mode == "paused" or mode == "maintenance" then
        local ____until = num(zones.state, keys["until"])
        if ____until > 0 and ngx.now() >= ____until then
            release.advance(keys)
            notify(keys)
            return modeOf(keys)
        end
    end
    return mode
end
return ____exports
