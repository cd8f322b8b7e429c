local ____exports = {}
local cjson = require("cjson.safe")
local ____shm = require("intermission.shm")
local zones = ____shm.zones
local keysFor = ____shm.keysFor
local knownScopes = ____shm.knownScopes
local num = ____shm.num
local BUSY_KEY = ____shm.BUSY_KEY
local ____settings = require("intermission.settings")
local settings = ____settings.settings
local ____lock = require("intermission.lock")
local lock = ____lock.lock
local unlock = ____lock.unlock
local state = require("intermission.state")
local inflight = require("intermission.inflight")
local ____connection = require("intermission.fleet.connection")
local connect = ____connection.connect
local release = ____connection.release
local failed = ____connection.failed
local key = ____connection.key
local remote = require("intermission.fleet.remote")
--- Set by setup() on a cold start: requests wait for the first sync (bounded).
____exports.PENDING_KEY = "fleet|pending"
local SYNCED_KEY = "fleet|synced"
local ERROR_KEY = "fleet|error"
local NODE_TTL_MS = 3000
____exports.node = {id = ""}
--- Called by setup() (init phase, master): hold the first requests until the first sync.
function ____exports.markPending()
    local zone = zones.state
    local synced = zone:get(SYNCED_KEY)
    if synced ~= nil then
        return
    end
    local added = zone:add(____exports.PENDING_KEY, true)
    if added then
        zone:incr(BUSY_KEY, 1, 0)
    end
end
local function clearPending()
    local zone = zones.state
    local pending = zone:get(____exports.PENDING_KEY)
    if pending == nil then
        return
    end
    local token = lock()
    local still = zone:get(____exports.PENDING_KEY)
    if still ~= nil then
        zone:delete(____exports.PENDING_KEY)
        local left = zone:incr(BUSY_KEY, -1, 0)
        if left ~= nil and left <= 0 then
            zone:delete(BUSY_KEY)
        end
    end
    if token ~= nil then
        unlock(token)
    end
end
--- In the slow path: waits (bounded) while the node has not had its first sync.
function ____exports.awaitFirstSync()
    local cfg = settings.cfg.redis
    local deadline = ngx.now() + cfg.connect_timeout + cfg.read_timeout + 0.5
    while (zones.state:get(____exports.PENDING_KEY)) ~= nil and ngx.now() < deadline do
        ngx.sleep(0.005)
        ngx.update_time()
    end
end
--- Makes the local state of one scope what the fleet says.
function ____exports.apply(scope, rec)
    local keys = keysFor(scope)
    local ____local = state.modeOf(keys)
    if rec == nil then
        if ____local == "paused" or ____local == "maintenance" then
            state.resume(keys)
        end
        return
    end
    local snap = state.snapshot(keys)
    if ____local == rec.mode and snap.reason == rec.reason and math.abs(snap["until"] - rec["until"]) < 0.01 then
        return
    end
    local ttl = rec["until"] > 0 and math.max(
        0.001,
        rec["until"] - ngx.now()
    ) or 0
    if rec.mode == "paused" then
        state.pause(keys, ttl, rec.reason)
    else
        state.maintenance(keys, ttl, rec.reason)
    end
end
local function reconcile()
    local all, err = remote.readAll()
    if all == nil then
        return false, err
    end
    for scope, rec in pairs(all) do
        local ____exports_apply_2 = ____exports.apply
        local ____scope_1 = scope
        local ____temp_0
        if rec == false then
            ____temp_0 = nil
        else
            ____temp_0 = rec
        end
        ____exports_apply_2(____scope_1, ____temp_0)
    end
    for ____, scope in ipairs(knownScopes()) do
        if all[scope] == nil then
            ____exports.apply(scope, nil)
        end
    end
    return true, nil
end
local function heartbeat()
    local held = {}
    local total = 0
    for ____, scope in ipairs(knownScopes()) do
        local n = num(
            zones.state,
            keysFor(scope).held
        )
        held[scope] = n
        total = total + n
    end
    local body = cjson.encode({
        id = ____exports.node.id,
        at = ngx.now(),
        held = held,
        held_total = total,
        in_flight = inflight.total()
    })
    local red = connect()
    if red == nil or body == nil then
        return
    end
    red:init_pipeline(2)
    red:set(
        key("node", ____exports.node.id),
        body,
        "PX",
        NODE_TTL_MS
    )
    red:sadd(
        key("nodes"),
        ____exports.node.id
    )
    local replies = red:commit_pipeline()
    if replies == nil then
        red:close()
    else
        release(red)
    end
end
local function anyBusy()
    return (zones.state:get(BUSY_KEY)) ~= nil
end
--- One subscription, until Redis fails or the worker exits.
local function session()
    local sub, err = connect()
    if sub == nil then
        return err
    end
    local channel = key(remote.CHANNEL_SUFFIX)
    local ok, subErr = sub:subscribe(channel)
    if ok == nil or ok == false then
        sub:close()
        return "redis SUBSCRIBE: " .. tostring(subErr)
    end
    local synced, syncErr = reconcile()
    if not synced then
        sub:close()
        return syncErr
    end
    zones.state:set(SYNCED_KEY, true)
    zones.state:delete(ERROR_KEY)
    clearPending()
    heartbeat()
    local lastBeat = ngx.now()
    while not ngx.worker.exiting() do
        sub:set_timeout(anyBusy() and 100 or 1000)
        local reply, readErr = sub:read_reply()
        if reply ~= nil then
            local r = reply
            if r[1] == "message" and type(r[3]) == "string" then
                local ____, ____, scope, record = string.find(r[3], "^([^\n]*)\n(.*)$")
                if scope ~= nil then
                    ____exports.apply(
                        scope,
                        remote.decode(record)
                    )
                end
            end
        elseif readErr ~= "timeout" then
            sub:close()
            return "redis subscription: " .. tostring(readErr)
        end
        ngx.update_time()
        local interval = anyBusy() and 0.1 or 1
        if ngx.now() - lastBeat >= interval then
            local fine, recErr = reconcile()
            if not fine then
                sub:close()
                return recErr
            end
            heartbeat()
            lastBeat = ngx.now()
        end
    end
    sub:close()
    return ""
end
local function loop(premature)
    if premature then
        return
    end
    local backoff = 0.1
    local reported = false
    while not ngx.worker.exiting() do
        local ok, result = pcall(session)
        if ngx.worker.exiting() then
            break
        end
        local err = ok and result or "sync failed: " .. tostring(result)
        zones.state:set(ERROR_KEY, err)
        clearPending()
        if not reported then
            ngx.log(ngx.ERR, ("intermission: fleet: " .. err) .. "; keeping the last known state and retrying")
            reported = true
        end
        ngx.sleep(backoff)
        backoff = math.min(backoff * 2, 2)
    end
end
--- init_worker: worker 0 runs the node's sync loop.
function ____exports.start()
    if ngx.worker.id() ~= 0 then
        return
    end
    local ok, err = ngx.timer.at(0, loop)
    if not ok then
        ngx.log(
            ngx.ERR,
            "intermission: fleet: cannot start the sync loop: " .. tostring(err)
        )
    end
end
--- The last sync error, if Redis is failing now.
function ____exports.lastError()
    local e = zones.state:get(ERROR_KEY)
    return e
end
--- The fleet's nodes as their heartbeats say.
function ____exports.fleetStatus()
    local red, err = connect()
    if red == nil then
        return nil, err
    end
    local ids, e1 = red:smembers(key("nodes"))
    if failed(red, ids) then
        return nil, "redis: " .. tostring(e1)
    end
    local nodes = {}
    local held = 0
    local inFlight = 0
    for ____, id in ipairs(ids) do
        local v, getErr = red:get(key("node", id))
        if failed(red, v) then
            return nil, "redis: " .. tostring(getErr)
        end
        if v == ngx.null then
            red:srem(
                key("nodes"),
                id
            )
        else
            local hb = cjson.decode(v)
            if type(hb) == "table" then
                local h = hb
                nodes[#nodes + 1] = hb
                held = held + h.held_total
                inFlight = inFlight + h.in_flight
            end
        end
    end
    release(red)
    return {nodes = nodes, node_count = #nodes, held = held, in_flight = inFlight}, nil
end
return ____exports
