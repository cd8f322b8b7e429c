local ____exports = {}
local ____shm = require("intermission.shm")
local zones = ____shm.zones
local keysFor = ____shm.keysFor
local inflight = require("intermission.inflight")
local fleet = require("intermission.fleet.sync")
local ____settings = require("intermission.settings")
local settings = ____settings.settings
local state = require("intermission.state")
local queue = require("intermission.queue")
local waiters = require("intermission.waiters")
local counters = require("intermission.counters")
local ____respond = require("intermission.respond")
local unavailable = ____respond.unavailable
local ngxVar = ngx.var
local DEFAULT_SCOPE = "default"
local CTX_RECORD = "intermission"
local CTX_WAITER = "intermission_waiter"
--- Requests in this worker with a Record not yet seen by log(); 0 keeps log() off ngx.ctx.
local pendingRecords = 0
--- $intermission_scope, else the seed's $app_name, else "default".
function ____exports.scopeOf()
    local scope = ngxVar.intermission_scope
    if scope ~= nil and scope ~= "" then
        return scope
    end
    local app = ngxVar.app_name
    if app ~= nil and app ~= "" then
        return app
    end
    return DEFAULT_SCOPE
end
--- Whether log() must look for a Record (some request of this worker took the slow path).
function ____exports.recordsPending()
    return pendingRecords > 0
end
--- The log hook for when records are pending: settles this request's record, if any.
function ____exports.settleRecord()
    local ctx = ngx.ctx
    local record = ctx[CTX_RECORD]
    if record == nil then
        return inflight.leave()
    end
    ctx[CTX_RECORD] = nil
    pendingRecords = pendingRecords - 1
    if record.forwarded then
        inflight.leave()
    end
    if record.releaseGen > 0 then
        queue.releaseSlot(record.keys, record.releaseGen)
        waiters.poke()
    end
end
local function remember(keys, forwarded, releaseGen)
    local record = {keys = keys, forwarded = forwarded, releaseGen = releaseGen}
    ngx.ctx[CTX_RECORD] = record
    pendingRecords = pendingRecords + 1
    if forwarded then
        inflight.enter()
    end
end
local function alwaysPasses()
    local cfg = settings.cfg
    local uri = ngxVar.uri
    if uri ~= nil then
        for ____, path in ipairs(cfg.health_check_paths) do
            if uri == path then
                return true
            end
        end
        local locationPath = ngxVar.intermission_health_check_path
        if locationPath ~= nil and locationPath ~= "" and uri == locationPath then
            return true
        end
    end
    local pattern = ngxVar.intermission_privileged_user_agent or cfg.privileged_user_agent
    if pattern ~= nil and pattern ~= "" then
        local ua = ngxVar.http_user_agent
        if ua ~= nil then
            local from, ____, err = ngx.re.find(ua, pattern, "jo")
            if err ~= nil then
                ngx.log(ngx.ERR, "intermission: bad privileged user agent pattern: " .. err)
            end
            if from ~= nil then
                return true
            end
        end
    end
    return false
end
--- Seconds this location may hold a request: $intermission_max_time, else max_hold.
local function maxHoldHere()
    local v = ngxVar.intermission_max_time
    if v ~= nil then
        local n = tonumber(v)
        if n ~= nil and n > 0 then
            return n
        end
    end
    return settings.cfg.max_hold
end
local function onAbort()
    local w = ngx.ctx[CTX_WAITER]
    if w ~= nil then
        waiters.abort(w)
    end
end
local function logExit(requestId, keys, waited, outcome)
    ngx.log(
        ngx.NOTICE,
        (((((("intermission: leave request_id=" .. requestId) .. " scope=") .. keys.scope) .. " waited=") .. string.format("%.3f", waited)) .. "s outcome=") .. outcome
    )
end
--- Holds the request until its turn, max_hold, an abort or maintenance.
local function hold(keys, mode)
    local cfg = settings.cfg
    local zone = zones.state
    local heldNow = zone:incr(keys.held, 1, 0)
    if heldNow == nil or heldNow > cfg.max_held then
        zone:incr(keys.held, -1, 0)
        counters.count(keys, "rejected")
        remember(keys, false, 0)
        ngx.log(
            ngx.WARN,
            (((("intermission: queue full, rejected request_id=" .. tostring(ngxVar.request_id)) .. " scope=") .. keys.scope) .. " max_held=") .. tostring(cfg.max_held)
        )
        return unavailable("full", cfg.retry_after, "")
    end
    local ticket, issueErr = queue.issue(keys)
    local w
    local enqueueErr = issueErr
    if ticket ~= nil then
        w, enqueueErr = waiters.enqueue(keys, ticket)
    end
    if w == nil then
        zone:incr(keys.held, -1, 0)
        if ticket ~= nil then
            queue.leave(keys, ticket)
        end
        ngx.log(
            ngx.ERR,
            "intermission: cannot hold request, passing it: " .. tostring(enqueueErr)
        )
        remember(keys, true, 0)
        return
    end
    local requestId = ngxVar.request_id or "-"
    local started = ngx.now()
    counters.count(keys, "held")
    ngx.log(
        ngx.NOTICE,
        (((((("intermission: hold request_id=" .. requestId) .. " scope=") .. keys.scope) .. " ticket=") .. tostring(ticket)) .. " state=") .. mode
    )
    ngx.ctx[CTX_WAITER] = w
    local abortOk, abortErr = ngx.on_abort(onAbort)
    if abortOk == nil and abortErr ~= "duplicate call" then
        ngx.log(
            ngx.INFO,
            "intermission: client aborts not detected while held: " .. tostring(abortErr)
        )
    end
    if mode ~= "paused" then
        queue.advance(keys)
        local claim = queue.claimOf(keys, ticket)
        if type(claim) == "number" then
            w.outcome = "released"
            w.releaseGen = claim
        end
    end
    local deadline = started + maxHoldHere()
    while w.outcome == nil do
        ngx.update_time()
        local remaining = deadline - ngx.now()
        if remaining <= 0 then
            break
        end
        w.sema:wait(remaining)
    end
    waiters.finish(w)
    ngx.ctx[CTX_WAITER] = nil
    zone:incr(keys.held, -1, 0)
    ngx.update_time()
    local waited = ngx.now() - started
    counters.observeHold(keys, waited)
    local outcome = w.outcome or "timeout"
    local releaseGen = w.releaseGen
    if outcome ~= "released" then
        local result, gen = queue.leave(keys, ticket)
        if result == "granted" then
            if outcome == "timeout" then
                outcome = "released"
                releaseGen = gen
            else
                queue.releaseSlot(keys, gen)
                waiters.poke()
            end
        end
    end
    logExit(requestId, keys, waited, outcome)
    if outcome == "released" then
        counters.count(keys, "released")
        remember(keys, true, releaseGen)
        return
    end
    if outcome == "aborted" then
        counters.count(keys, "aborted")
        remember(keys, false, 0)
        return ngx.exit(499)
    end
    if outcome == "maintenance" then
        counters.count(keys, "rejected")
        remember(keys, false, 0)
        return unavailable(
            "maintenance",
            cfg.retry_after,
            state.snapshot(keys).reason
        )
    end
    counters.count(keys, "timed_out")
    if cfg.on_timeout == "pass" then
        counters.count(keys, "passed")
        remember(keys, true, 0)
        return
    end
    remember(keys, false, 0)
    return unavailable("timeout", cfg.retry_after, "")
end
--- The access hook once some scope is not running.
function ____exports.gate()
    if settings.cfg.store == "redis" then
        fleet.awaitFirstSync()
    end
    local keys = keysFor(____exports.scopeOf())
    local mode = state.settle(keys)
    if mode == "running" then
        return remember(keys, true, 0)
    end
    if alwaysPasses() then
        return remember(keys, true, 0)
    end
    if mode == "maintenance" then
        counters.count(keys, "rejected")
        remember(keys, false, 0)
        return unavailable(
            "maintenance",
            settings.cfg.retry_after,
            state.snapshot(keys).reason
        )
    end
    return hold(keys, mode)
end
return ____exports
