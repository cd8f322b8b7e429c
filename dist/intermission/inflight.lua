local ____exports = {}
local ____shm = require("intermission.shm")
local zones = ____shm.zones
local FLUSH_EVERY = 8
local KEY_PREFIX = "inflight|"
local KEY_TTL = 3600
local here = 0
local drift = 0
local key = ""
local function publish()
    if key == "" then
        key = KEY_PREFIX .. tostring(ngx.worker.pid())
    end
    zones.state:set(key, here, KEY_TTL)
    drift = 0
end
--- A request is passed to the upstream.
function ____exports.enter()
    here = here + 1
    drift = drift + 1
    if here == 1 or drift >= FLUSH_EVERY then
        publish()
    end
end
--- A request finished (log phase). Never below zero: see the README on pairing.
function ____exports.leave()
    if here <= 0 then
        return
    end
    here = here - 1
    drift = drift - 1
    if here == 0 or drift <= -FLUSH_EVERY then
        publish()
    end
end
--- The node's total as published by its workers. Scans the state zone: control path only.
function ____exports.total()
    local zone = zones.state
    local prefixLength = #KEY_PREFIX
    local sum = 0
    for ____, k in ipairs(zone:get_keys(0)) do
        if string.sub(k, 1, prefixLength) == KEY_PREFIX then
            local v = zone:get(k)
            if type(v) == "number" then
                sum = sum + v
            end
        end
    end
    return sum
end
return ____exports
