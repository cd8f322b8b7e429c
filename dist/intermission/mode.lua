local ____exports = {}
local ____shm = require("intermission.shm")
local zones = ____shm.zones
local BUSY_KEY = ____shm.BUSY_KEY
function ____exports.modeOf(keys)
    local m = zones.state:get(keys.mode)
    return m == nil and "running" or m
end
--- Writes the mode and keeps the busy count right. Caller holds the scope's lock.
function ____exports.writeMode(keys, from, to)
    local zone = zones.state
    if to == "running" then
        zone:delete(keys.mode)
    else
        local ok, err = zone:safe_set(keys.mode, to)
        if not ok then
            return false, (("cannot write the mode of scope " .. keys.scope) .. ": ") .. tostring(err)
        end
    end
    if from == "running" and to ~= "running" then
        zone:safe_add(BUSY_KEY, 0)
        zone:incr(BUSY_KEY, 1)
    elseif from ~= "running" and to == "running" then
        zone:incr(BUSY_KEY, -1)
    end
    return true, nil
end
return ____exports
