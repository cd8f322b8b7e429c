local ____exports = {}
local wakeLane, post, headOf, postDue, localQueues, watch
local semaphore = require("ngx.semaphore")
local ____shm = require("intermission.shm")
local zones = ____shm.zones
local num = ____shm.num
local ____settings = require("intermission.settings")
local settings = ____settings.settings
local ____mode = require("intermission.mode")
local modeOf = ____mode.modeOf
function wakeLane(lane)
    local q = localQueues[lane.seq]
    if q ~= nil then
        postDue(
            lane.seq,
            q,
            headOf(lane)
        )
    end
end
function post(w)
    if w.sema:count() < 0 then
        w.sema:post(1)
    end
end
function headOf(lane)
    local h = zones.state:get(lane.head)
    return type(h) == "number" and h or math.huge
end
function postDue(id, q, head)
    while q.first <= q.last do
        local w = q.items[q.first + 1]
        local listed = q.tickets[q.first + 1]
        if w ~= nil and not w.done and w.ticket == listed then
            if listed > head then
                break
            end
            post(w)
        end
        q.items[q.first + 1] = nil
        q.first = q.first + 1
    end
    if q.first > q.last and localQueues[id] == q then
        localQueues[id] = nil
    end
end
--- The request is not waiting any more, whatever the outcome.
function ____exports.done(w)
    if w.done then
        return
    end
    w.done = true
    watch.waiting = watch.waiting - 1
end
--- How long past its deadline a waiter may stay listed: beyond that its coroutine is gone.
local STALE_AFTER = 1
local SWEEP_EVERY = 1
--- The longest a watcher sleeps unposted while every scope it holds for is paused (one worker).
local QUIET_WAIT = 0.1
localQueues = {}
watch = {
    running = false,
    waiting = 0,
    sema = nil,
    lastSweep = 0,
    advance = nil,
    probe = nil,
    lookOutside = nil,
    lastOutside = 0
}
--- How often the watcher lets persist.ts look at the state file.
local OUTSIDE_EVERY = 0.5
function ____exports.setAdvance(fn)
    watch.advance = fn
end
--- outage.keepProbers: a scope whose requests this worker holds has the prober it waits
-- for (its outage's, its ready probe's, its retry lane's connect prober) on this node,
-- even when no new request comes (the prober's worker was killed, or exits).
function ____exports.setProbe(fn)
    watch.probe = fn
end
function ____exports.setLookOutside(fn)
    watch.lookOutside = fn
end
--- The scopes this worker holds requests for, to persist.ts, every OUTSIDE_EVERY.
local function lookOutside(now)
    if watch.lookOutside == nil or now - watch.lastOutside < OUTSIDE_EVERY then
        return
    end
    watch.lastOutside = now
    local scopes = {}
    local seen = {}
    for ____, q in pairs(localQueues) do
        local keys = q.keys
        if seen[keys.scope] == nil then
            seen[keys.scope] = true
            scopes[#scopes + 1] = keys
        end
    end
    if #scopes > 0 then
        local ok, err = pcall(watch.lookOutside, scopes)
        if not ok then
            ngx.log(
                ngx.ERR,
                "intermission: watcher failed to read the state file: " .. tostring(err)
            )
        end
    end
end
--- Wakes this worker's watcher now instead of at its next poll.
function ____exports.poke()
    if watch.running and watch.sema ~= nil and watch.sema:count() < 0 then
        watch.sema:post(1)
    end
end
--- Wakes this worker's waiters of this scope whose tickets the head has passed (granted
-- in this worker's log() or header_filter(), or by another worker whose advance this
-- one saw), at once rather than at the watcher's next poll, and without waking the
-- watcher (which would advance the scope once more for nothing). Never yields.
function ____exports.wakeDue(keys)
    if watch.waiting <= 0 then
        return
    end
    wakeLane(keys.retry)
    wakeLane(keys.main)
end
--- A fresh waiter for one request; its semaphore is reused if it queues again.
function ____exports.newWaiter(keys)
    local sema, err = semaphore.new(0)
    if sema == nil then
        return nil, "cannot create a semaphore: " .. tostring(err)
    end
    return {
        keys = keys,
        lane = keys.main,
        ticket = 0,
        deadline = 0,
        sema = sema,
        aborted = false,
        done = true
    }, nil
end
--- Wakes a waiter whatever it waits for (abort).
function ____exports.wake(w)
    post(w)
end
local function pumpScope(id, q)
    watch.advance(q.keys)
    local mode = modeOf(q.keys)
    if watch.probe ~= nil then
        watch.probe(q.keys, mode)
    end
    if mode == "maintenance" then
        do
            local i = q.first
            while i <= q.last do
                local w = q.items[i + 1]
                if w ~= nil and not w.done then
                    post(w)
                end
                i = i + 1
            end
        end
    end
    postDue(
        id,
        q,
        headOf(q.lane)
    )
end
--- Drops waiters whose request is gone without a word (a killed coroutine).
local function sweep(now)
    for ____, q in pairs(localQueues) do
        local lq = q
        do
            local i = lq.first
            while i <= lq.last do
                local w = lq.items[i + 1]
                if w ~= nil and not w.done and w.deadline + STALE_AFTER < now then
                    ____exports.done(w)
                end
                i = i + 1
            end
        end
    end
end
--- Seconds until the watcher must look again unless posted (see the top of this file).
local function nextLook(now)
    local poll = settings.cfg.poll_interval
    if ngx.worker.count() ~= 1 or ngx.worker.exiting() then
        return poll
    end
    local wait = QUIET_WAIT
    for ____, q in pairs(localQueues) do
        local keys = q.keys
        if modeOf(keys) ~= "paused" then
            return poll
        end
        local ____until = num(zones.state, keys["until"])
        if ____until > 0 then
            wait = math.min(wait, ____until - now)
        end
    end
    return math.max(wait, poll)
end
local function watcher(_premature)
    local sema = watch.sema
    while true do
        for scope, q in pairs(localQueues) do
            local ok, err = pcall(pumpScope, scope, q)
            if not ok then
                ngx.log(
                    ngx.ERR,
                    (("intermission: watcher failed for scope " .. scope) .. ": ") .. tostring(err)
                )
            end
        end
        ngx.update_time()
        local now = ngx.now()
        if now - watch.lastSweep >= SWEEP_EVERY then
            watch.lastSweep = now
            sweep(now)
        end
        lookOutside(now)
        if watch.waiting <= 0 then
            break
        end
        sema:wait(nextLook(now))
    end
    watch.running = false
end
local function ensureWatcher()
    if watch.running then
        return true, nil
    end
    if watch.sema == nil then
        local sema, err = semaphore.new(0)
        if sema == nil then
            return false, "cannot create the watcher semaphore: " .. tostring(err)
        end
        watch.sema = sema
    end
    local ok, err = ngx.timer.at(0, watcher)
    if not ok then
        return false, "cannot start the watcher: " .. tostring(err)
    end
    watch.running = true
    return true, nil
end
--- Lists a waiter under its ticket and makes sure the watcher runs. False: there is no
-- watcher (an exiting worker cannot start timers), so the waiter must look for itself.
function ____exports.track(w, keys, lane, ticket, deadline)
    w.keys = keys
    w.lane = lane
    w.ticket = ticket
    w.deadline = deadline
    w.done = false
    watch.waiting = watch.waiting + 1
    local ok, err = ensureWatcher()
    if not ok then
        ngx.log(
            ngx.WARN,
            (("intermission: no watcher, held request_id=" .. (ngx.var.request_id or "-")) .. " looks for itself: ") .. tostring(err)
        )
    end
    local id = lane.seq
    local q = localQueues[id]
    if q == nil then
        q = {
            keys = keys,
            lane = lane,
            items = {},
            tickets = {},
            first = 1,
            last = 0
        }
        localQueues[id] = q
    end
    q.last = q.last + 1
    q.items[q.last + 1] = w
    q.tickets[q.last + 1] = ticket
    return ok
end
return ____exports
