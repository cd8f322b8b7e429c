local ____exports = {}
local noteApplied, settleUnknown, seen
local cjson = require("cjson.safe")
local ____shm = require("intermission.shm")
local zones = ____shm.zones
local keysFor = ____shm.keysFor
local knownScopes = ____shm.knownScopes
local BUSY_KEY = ____shm.BUSY_KEY
local FLEET_SHARE_KEY = ____shm.FLEET_SHARE_KEY
local FLEET_PENDING_KEY = ____shm.FLEET_PENDING_KEY
local FLEET_SYNCED_KEY = ____shm.FLEET_SYNCED_KEY
local FLEET_ERROR_KEY = ____shm.FLEET_ERROR_KEY
local num = ____shm.num
local ____settings = require("intermission.settings")
local settings = ____settings.settings
local ____lock = require("intermission.lock")
local lock = ____lock.lock
local unlock = ____lock.unlock
local state = require("intermission.state")
local ____release = require("intermission.release")
local heldNow = ____release.heldNow
local inflight = require("intermission.inflight")
local ____connection = require("intermission.fleet.connection")
local connect = ____connection.connect
local release = ____connection.release
local failed = ____connection.failed
local key = ____connection.key
local remote = require("intermission.fleet.remote")
local unsettled = require("intermission.fleet.unsettled")
function noteApplied(applied)
    if applied ~= "none" and settings.cfg.fleet_release_window ~= nil then
        seen.shareDue = true
    end
    return applied
end
function settleUnknown()
    for ____, u in ipairs(unsettled.all()) do
        local outcome = remote.settleOnce(u.id)
        if outcome == nil then
            return
        end
        if outcome == "applied" then
            ngx.log(ngx.WARN, ((((("intermission: fleet: the " .. u.action) .. " of scope ") .. u.scope) .. " answered \"unknown\" (change ") .. u.id) .. ") was applied; it stays until changed")
        else
            ngx.log(ngx.NOTICE, ((((("intermission: fleet: the " .. u.action) .. " of scope ") .. u.scope) .. " answered \"unknown\" (change ") .. u.id) .. ") was not applied; fenced, it never will be")
        end
        unsettled.settled(u.scope, {u.id})
    end
end
--- fleet_release_window: this node's share of the fleet's release window, from the live
-- nodes in the heartbeats (at least 1). Called once the channel is quiet after a pause
-- and right after each resume (whose first grant takes a window of 1 whatever the share),
-- so it costs Redis one script per change, not per second, and the node nothing per
-- node of the fleet; if Redis cannot answer, the last share stays.
function ____exports.refreshShare()
    local total = settings.cfg.fleet_release_window
    if total == nil then
        return
    end
    local live = remote.liveNodes()
    if live == nil then
        return
    end
    zones.state:safe_set(
        FLEET_SHARE_KEY,
        math.max(
            1,
            math.floor(total / math.max(1, live))
        )
    )
end
--- Set by setup() on a cold start: requests wait for the first sync (bounded).
____exports.PENDING_KEY = FLEET_PENDING_KEY
local SYNCED_KEY = FLEET_SYNCED_KEY
local ERROR_KEY = FLEET_ERROR_KEY
--- A heartbeat lives this long unless refreshed: a node that stops drops out of status after it.
____exports.NODE_TTL_MS = 15000
--- Seconds between checks while every scope here runs, and while one is paused or in maintenance (each x0.8-1.2).
____exports.CHECK_IDLE = 5
____exports.CHECK_STOPPED = 1
--- While a scope is stopped: how often the loop looks whether its in-flight count moved (for the fleet's drain).
local WAKE_STOPPED = 0.1
--- Otherwise, how long one read on the subscription waits at most.
local WAKE_IDLE = 1
local BACKOFF_MAX = 2
____exports.node = {id = ""}
--- Called by setup() (init phase, master): hold the first requests until the first sync.
function ____exports.markPending()
    local zone = zones.state
    local synced = zone:get(SYNCED_KEY)
    if synced ~= nil then
        return
    end
    local added = zone:safe_add(____exports.PENDING_KEY, true)
    if added then
        zone:incr(BUSY_KEY, 1)
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
        zone:incr(BUSY_KEY, -1)
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
--- Makes the local state of one scope what the fleet says. The deadline is this node's
-- clock plus the seconds the record has left: no other node's clock is read. Only the
-- shared dict is written here (what the hot path reads); the caller does the rest after.
function ____exports.apply(scope, rec)
    local keys = keysFor(scope)
    local ____local = state.modeOf(keys)
    ngx.update_time()
    if rec == nil then
        if ____local ~= "paused" and ____local ~= "maintenance" then
            return "none"
        end
        if settings.cfg.fleet_release_window ~= nil and num(zones.state, FLEET_SHARE_KEY) == 0 then
            ____exports.refreshShare()
        end
        state.resume(keys)
        return "resumed"
    end
    local ____until = rec.ttl > 0 and ngx.now() + rec.ttl or 0
    if ____local == rec.mode then
        local zone = zones.state
        local was = num(zone, keys["until"])
        local ____temp_0
        if ____until == 0 then
            ____temp_0 = was == 0
        else
            ____temp_0 = was > 0 and math.abs(was - ____until) < 0.25
        end
        local sameDeadline = ____temp_0
        if sameDeadline and (zone:get(keys.reason)) == rec.reason then
            return "none"
        end
    end
    if rec.mode == "paused" then
        state.pause(keys, rec.ttl, rec.reason)
    else
        state.maintenance(keys, rec.ttl, rec.reason)
    end
    return "stopped"
end
seen = {
    version = -1,
    beatVersion = -1,
    beatInFlight = -1,
    beatAt = 0,
    setGet = true,
    seed = 0,
    probe = 0,
    shareDue = false
}
--- The channel names (set by session: no string is built per message).
local channels = {events = "", probe = ""}
--- A factor from 0.8 to 1.2 (Park-Miller, seeded per worker), so a fleet's timers drift apart.
local function jitter()
    if seen.seed == 0 then
        seen.seed = (ngx.worker.pid() * 7919 + math.floor(ngx.now() * 1000)) % 2147483646 + 1
    end
    seen.seed = seen.seed * 16807 % 2147483647
    return 0.8 + 0.4 * (seen.seed / 2147483647)
end
local function reconcile()
    local all, version, err = remote.readAll()
    if all == nil then
        return false, err
    end
    for scope, rec in pairs(all) do
        noteApplied(____exports.apply(scope, rec))
    end
    for ____, scope in ipairs(knownScopes()) do
        if all[scope] == nil then
            noteApplied(____exports.apply(scope, nil))
        end
    end
    seen.version = version
    return true, nil
end
--- Publishes this node's heartbeat (one SET; SADD to the node list only when the key had
-- lapsed) and, with `readVersion`, reads the fleet's change counter in the same round
-- trip; with `probe`, then publishes it to this node's probe channel.
local function heartbeat(readVersion, probe)
    local held = {}
    local total = 0
    for ____, scope in ipairs(knownScopes()) do
        local n = heldNow(keysFor(scope))
        held[scope] = n
        total = total + n
    end
    local inFlight = inflight.total()
    local body = cjson.encode({
        id = ____exports.node.id,
        at = ngx.now(),
        held = held,
        held_total = total,
        in_flight = inFlight,
        version = seen.version
    })
    if body == nil then
        return false, nil, "cannot encode the heartbeat"
    end
    local red, err = connect()
    if red == nil then
        return false, nil, err
    end
    local nodeKey = key("node", ____exports.node.id)
    red:init_pipeline(3)
    if seen.setGet then
        red:set(
            nodeKey,
            body,
            "PX",
            ____exports.NODE_TTL_MS,
            "GET"
        )
    else
        red:set(nodeKey, body, "PX", ____exports.NODE_TTL_MS)
        red:sadd(
            key("nodes"),
            ____exports.node.id
        )
    end
    if readVersion then
        red:get(key("version"))
    end
    if probe ~= nil then
        red:publish(
            key("probe", ____exports.node.id),
            tostring(probe)
        )
    end
    local replies, pipeErr = red:commit_pipeline()
    if replies == nil then
        red:close()
        return false, nil, "redis heartbeat: " .. tostring(pipeErr)
    end
    local first = replies[1]
    if seen.setGet and type(first) == "table" then
        local setErr = tostring(first[2])
        if (string.find(setErr, "syntax", 1, true)) == nil then
            release(red)
            return false, nil, "redis heartbeat: " .. setErr
        end
        seen.setGet = false
        red:sadd(
            key("nodes"),
            ____exports.node.id
        )
    elseif seen.setGet and first == ngx.null then
        red:sadd(
            key("nodes"),
            ____exports.node.id
        )
    end
    local version
    if readVersion then
        local v = replies[#replies - (probe ~= nil and 2 or 1) + 1]
        if type(v) == "table" then
            release(red)
            return false, nil, "redis GET version: " .. tostring(v[2])
        end
        version = v == ngx.null and 0 or (tonumber(v) or 0)
    end
    release(red)
    seen.beatVersion = seen.version
    seen.beatInFlight = inFlight
    seen.beatAt = ngx.now()
    return true, version, nil
end
--- Some scope on this node is paused or in maintenance (not just draining or waiting for the first sync).
local function anyStopped()
    local busy = zones.state:get(BUSY_KEY)
    if busy == nil or busy == 0 then
        return false
    end
    for ____, scope in ipairs(knownScopes()) do
        local mode = state.modeOf(keysFor(scope))
        if mode == "paused" or mode == "maintenance" then
            return true
        end
    end
    return false
end
--- One message from the channel: what it applied, and false when it shows that a change
-- was missed (its version skips one), so the caller reconciles.
local function onMessage(reply)
    if reply[1] ~= "message" or reply[2] ~= channels.events or type(reply[3]) ~= "string" then
        return true, "none"
    end
    local ____, ____, scope, body = string.find(reply[3], "^([^\n]*)\n(.*)$")
    if scope == nil then
        return true, "none"
    end
    local rec, version = remote.decode(body)
    if version ~= nil then
        if version <= seen.version then
            return true, "none"
        end
        local gap = version > seen.version + 1
        local applied = noteApplied(____exports.apply(scope, rec))
        seen.version = version
        return not gap, applied
    end
    return true, noteApplied(____exports.apply(scope, rec))
end
--- Reads the subscription until this node's probe `token` comes back, applying the
-- changes before it. Not a PING on the subscription: a Redis that stops with a command of
-- ours unread resets the connection, which nginx logs as an error; a message we asked
-- Redis to send us also proves that what is published reaches us.
local function awaitProbe(sub, token)
    local probeChannel = channels.probe
    sub:set_timeout(settings.cfg.redis.read_timeout * 1000)
    local complete = true
    while true do
        local reply, err = sub:read_reply()
        if reply == nil then
            return false, ("redis subscription: no probe back (" .. tostring(err)) .. ")", complete
        end
        local r = reply
        if r[1] == "message" and r[2] == probeChannel then
            if r[3] == tostring(token) then
                return true, nil, complete
            end
        elseif not (onMessage(r)) then
            complete = false
        end
    end
end
--- The periodic check: heartbeat, the fleet's change counter and a probe in one round
-- trip; then the probe back through the subscription (so it is alive, and every change
-- published before the counter was read has arrived); a reconcile only if one is missing.
local function check(sub)
    seen.probe = seen.probe + 1
    local beat, version, beatErr = heartbeat(true, seen.probe)
    if not beat then
        return false, beatErr
    end
    local alive, probeErr, complete = awaitProbe(sub, seen.probe)
    if not alive then
        return false, probeErr
    end
    if not complete or version ~= seen.version then
        ngx.log(
            ngx.INFO,
            ((("intermission: fleet: change counter " .. tostring(version)) .. " but ") .. tostring(seen.version)) .. " seen: reconciling"
        )
        local ok, recErr = reconcile()
        if not ok then
            return false, recErr
        end
    end
    settleUnknown()
    return true, nil
end
--- One subscription, until Redis fails or the worker exits.
local function session()
    local sub, err = connect()
    if sub == nil then
        return err
    end
    channels.events = key(remote.CHANNEL_SUFFIX)
    channels.probe = key("probe", ____exports.node.id)
    local ok, subErr = sub:subscribe(channels.events, channels.probe)
    if ok == nil or ok == false then
        sub:close()
        return "redis SUBSCRIBE: " .. tostring(subErr)
    end
    local synced, syncErr = reconcile()
    if not synced then
        sub:close()
        return syncErr
    end
    zones.state:safe_set(SYNCED_KEY, true)
    zones.state:delete(ERROR_KEY)
    clearPending()
    local beat, ____, beatErr = heartbeat(false)
    if not beat then
        sub:close()
        return beatErr
    end
    settleUnknown()
    local stopped = anyStopped()
    local nextCheck = ngx.now() + (stopped and ____exports.CHECK_STOPPED or ____exports.CHECK_IDLE) * jitter()
    while not ngx.worker.exiting() do
        local wait = math.min(
            stopped and WAKE_STOPPED or WAKE_IDLE,
            nextCheck - ngx.now()
        )
        sub:set_timeout(math.max(
            1,
            math.floor(wait * 1000)
        ))
        local reply, readErr = sub:read_reply()
        local complete = true
        local applied = "none"
        if reply ~= nil then
            complete, applied = onMessage(reply)
        elseif readErr ~= "timeout" then
            sub:close()
            return "redis subscription: " .. tostring(readErr)
        end
        if applied == "resumed" then
            ngx.sleep(0)
            if seen.shareDue then
                seen.shareDue = false
                ____exports.refreshShare()
            end
        end
        ngx.update_time()
        local now = ngx.now()
        if applied ~= "none" then
            local wasStopped = stopped
            stopped = applied == "stopped" or anyStopped()
            if stopped and not wasStopped then
                nextCheck = math.min(
                    nextCheck,
                    now + ____exports.CHECK_STOPPED * jitter()
                )
            end
        end
        local fine = true
        local failure
        if not complete then
            fine, failure = reconcile()
        end
        if fine and now >= nextCheck then
            fine, failure = check(sub)
            stopped = anyStopped()
            nextCheck = now + (stopped and ____exports.CHECK_STOPPED or ____exports.CHECK_IDLE) * jitter()
        elseif fine and reply == nil and now - seen.beatAt >= WAKE_STOPPED and (seen.version ~= seen.beatVersion or stopped and inflight.total() ~= seen.beatInFlight) then
            local ____temp_1 = {heartbeat(false)}
            fine = ____temp_1[1]
            failure = ____temp_1[3]
        end
        if fine and seen.shareDue and reply == nil then
            seen.shareDue = false
            ____exports.refreshShare()
        end
        if not fine then
            sub:close()
            return failure
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
        local started = ngx.now()
        local ok, result = pcall(session)
        if ngx.worker.exiting() then
            break
        end
        local err = ok and result or "sync failed: " .. tostring(result)
        zones.state:safe_set(ERROR_KEY, err)
        clearPending()
        ngx.update_time()
        if ngx.now() - started > BACKOFF_MAX * 2 then
            backoff = 0.1
            reported = false
        end
        if not reported then
            ngx.log(ngx.ERR, ("intermission: fleet: " .. err) .. "; keeping the last known state and retrying")
            reported = true
        end
        ngx.sleep(backoff * jitter())
        backoff = math.min(backoff * 2, BACKOFF_MAX)
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
--- The fleet's nodes as their heartbeats say (two commands: SMEMBERS, MGET).
function ____exports.fleetStatus()
    local red, err = connect()
    if red == nil then
        return nil, err
    end
    local ids, e1 = red:smembers(key("nodes"))
    if failed(red, ids) then
        return nil, "redis: " .. tostring(e1)
    end
    local list = ids
    local nodes = {}
    local held = 0
    local inFlight = 0
    if #list > 0 then
        local keys = {}
        for ____, id in ipairs(list) do
            keys[#keys + 1] = key("node", id)
        end
        local values, e2 = red:mget(unpack(keys))
        if failed(red, values) then
            return nil, "redis: " .. tostring(e2)
        end
        local gone = {}
        local replies = values
        do
            local i = 0
            while i < #list do
                do
                    local v = replies[i + 1]
                    if v == ngx.null then
                        gone[#gone + 1] = list[i + 1]
                        goto __continue109
                    end
                    local hb = cjson.decode(v)
                    if type(hb) == "table" then
                        local h = hb
                        nodes[#nodes + 1] = hb
                        held = held + h.held_total
                        inFlight = inFlight + h.in_flight
                    end
                end
                ::__continue109::
                i = i + 1
            end
        end
        if #gone > 0 then
            red:srem(
                key("nodes"),
                unpack(gone)
            )
        end
    end
    release(red)
    return {nodes = nodes, node_count = #nodes, held = held, in_flight = inFlight}, nil
end
return ____exports
