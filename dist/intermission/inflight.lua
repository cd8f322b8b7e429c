local ____exports = {}
local ____shm = require("intermission.shm")
local zones = ____shm.zones
local liveness = require("intermission.liveness")
local FLUSH_EVERY = 8
--- Seconds after which a worker's count, once it reached 0 or moved, is published.
local PUBLISH_AFTER = 0.2
local KEY_PREFIX = "#inflight|"
--- Workers of 0.2.0 and earlier (an old generation during a reload): "inflight|<pid>", digits only.
local LEGACY_PATTERN = "^inflight|%d+$"
local KEY_TTL = 3600
local here = 0
--- What this worker last published.
local published = 0
local pending = false
local key = ""
local function publish()
    if key == "" then
        key = KEY_PREFIX .. tostring(ngx.worker.pid())
    end
    local ok, err = zones.state:safe_set(key, here, KEY_TTL)
    if ok then
        published = here
    else
        ngx.log(
            ngx.ERR,
            "intermission: cannot publish this worker's in-flight count: " .. tostring(err)
        )
    end
end
local function flush()
    pending = false
    if here ~= published then
        publish()
    end
end
--- Publishes within PUBLISH_AFTER. The timer also runs (premature) when the worker exits.
local function publishSoon()
    if pending then
        return
    end
    local ok = ngx.timer.at(PUBLISH_AFTER, flush)
    if ok == nil then
        publish()
    else
        pending = true
    end
end
--- Writes this worker's key at start, so that no later publish needs memory.
function ____exports.init()
    publish()
end
--- A request is passed to the upstream.
function ____exports.enter()
    here = here + 1
    if published == 0 then
        publish()
    elseif here - published >= FLUSH_EVERY then
        publishSoon()
    end
end
--- A request finished (log phase). Never below zero: see the README on pairing.
function ____exports.leave()
    if here <= 0 then
        return
    end
    here = here - 1
    local ____temp_0
    if here == 0 then
        ____temp_0 = published ~= 0
    else
        ____temp_0 = published - here >= FLUSH_EVERY
    end
    if ____temp_0 then
        publishSoon()
    end
end
--- leave() for a request of the control path (the control request itself, counted by
-- server-level hooks): its 0 is published at once, so other workers' status and drain
-- do not count it for the next PUBLISH_AFTER.
function ____exports.leaveNow()
    ____exports.leave()
    if here == 0 and published ~= 0 then
        publish()
    end
end
--- The node's total: this worker's own count, exact, and the others' as published. Scans
-- the state zone: control path only. (Reading its own key instead would count the
-- control request itself, whose 0 is not published yet.)
function ____exports.total()
    local zone = zones.state
    local prefixLength = #KEY_PREFIX
    if key == "" then
        key = KEY_PREFIX .. tostring(ngx.worker.pid())
    end
    if published ~= here then
        publish()
    end
    local sum = here
    local now = ngx.now()
    for ____, k in ipairs(zone:get_keys(0)) do
        if k ~= key and (string.sub(k, 1, prefixLength) == KEY_PREFIX or (string.match(k, LEGACY_PATTERN)) ~= nil) then
            local v = zone:get(k)
            if type(v) == "number" and v ~= 0 then
                if liveness.gone(
                    tonumber((string.match(k, "(%d+)$"))),
                    now
                ) then
                    zone:delete(k)
                else
                    sum = sum + v
                end
            end
        end
    end
    return sum
end
return ____exports
