local ____exports = {}
local semaphore = require("ngx.semaphore")
local ____settings = require("intermission.settings")
local settings = ____settings.settings
local queue = require("intermission.queue")
local state = require("intermission.state")
local localQueues = {}
local watch = {running = false, held = 0, sema = nil}
--- Wakes this worker's watcher now instead of at its next poll.
function ____exports.poke()
    if watch.running and watch.sema ~= nil and watch.sema:count() < 0 then
        watch.sema:post(1)
    end
end
local function wakeUp(w, outcome, releaseGen)
    if w.outcome ~= nil then
        return
    end
    w.outcome = outcome
    w.releaseGen = releaseGen
    w.sema:post(1)
end
--- Posts every granted waiter at the front of a scope's local queue, in ticket order.
local function releaseGranted(q)
    local headTicket = queue.head(q.keys)
    while q.first <= q.last do
        local w = q.items[q.first + 1]
        if w ~= nil and not w.gone then
            if w.ticket > headTicket then
                break
            end
            local claim = queue.claimOf(q.keys, w.ticket)
            if claim == nil then
                break
            end
            if type(claim) == "number" then
                wakeUp(w, "released", claim)
            end
        end
        q.items[q.first + 1] = nil
        q.first = q.first + 1
    end
end
local function answerMaintenance(q)
    do
        local i = q.first
        while i <= q.last do
            local w = q.items[i + 1]
            if w ~= nil and not w.gone then
                wakeUp(w, "maintenance", 0)
            end
            q.items[i + 1] = nil
            i = i + 1
        end
    end
    q.first = q.last + 1
end
local function pumpScope(scope, q)
    local mode = state.settle(q.keys)
    if mode == "maintenance" then
        answerMaintenance(q)
    elseif mode ~= "paused" then
        queue.advance(q.keys)
        releaseGranted(q)
    end
    if q.first > q.last then
        localQueues[scope] = nil
    end
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
        if watch.held <= 0 then
            break
        end
        sema:wait(settings.cfg.poll_interval)
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
--- Puts a ticket on this worker's queue and makes sure the watcher runs.
function ____exports.enqueue(keys, ticket)
    local sema, semaErr = semaphore.new(0)
    if sema == nil then
        return nil, "cannot create a semaphore: " .. tostring(semaErr)
    end
    local ok, err = ensureWatcher()
    if not ok then
        return nil, err
    end
    local q = localQueues[keys.scope]
    if q == nil then
        q = {keys = keys, items = {}, first = 1, last = 0}
        localQueues[keys.scope] = q
    end
    local w = {
        keys = keys,
        ticket = ticket,
        sema = sema,
        releaseGen = 0,
        gone = false
    }
    q.last = q.last + 1
    q.items[q.last + 1] = w
    watch.held = watch.held + 1
    return w, nil
end
--- The request is done waiting, whatever the outcome.
function ____exports.finish(w)
    if w.gone then
        return
    end
    w.gone = true
    watch.held = watch.held - 1
end
--- Marks a waiter aborted and wakes it (called from ngx.on_abort).
function ____exports.abort(w)
    wakeUp(w, "aborted", 0)
end
state.listeners.changed = function() return ____exports.poke() end
return ____exports
