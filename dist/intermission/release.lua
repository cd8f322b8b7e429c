local ____exports = {}
local tryLock, settleLease, reclaimExpired, windowHasRoom, grant, passOverDead, decide, pending, drainLane, step, LEFT, DEAD, GRACE, CLAIM_SLACK, LOCK_TTL, SETTLE, SETTLED_BELOW, BACKOFF_FIRST, BACKOFF_MAX, unwritten
local ____shm = require("intermission.shm")
local zones = ____shm.zones
local num = ____shm.num
local FLEET_SHARE_KEY = ____shm.FLEET_SHARE_KEY
local ____settings = require("intermission.settings")
local settings = ____settings.settings
local ____mode = require("intermission.mode")
local modeOf = ____mode.modeOf
local writeMode = ____mode.writeMode
local waiters = require("intermission.waiters")
local ready = require("intermission.ready")
function tryLock(keys)
    local ok = zones.state:safe_add(keys.lock, true, LOCK_TTL)
    return ok
end
--- The largest window now: release_window, or in a fleet with fleet_release_window this
-- node's share of it (computed from the live heartbeats at each resume).
function ____exports.windowLimit()
    local cfg = settings.cfg
    if cfg.fleet_release_window == nil then
        return cfg.release_window
    end
    local share = num(zones.state, FLEET_SHARE_KEY)
    return math.min(cfg.release_window, share > 0 and share or cfg.fleet_release_window)
end
function settleLease(keys, lease, ____end)
    local q = zones.queue
    local st = zones.state
    local leaseKey = keys.leasePrefix .. tostring(lease)
    local v = q:incr(leaseKey, -SETTLE)
    if v == nil or v < SETTLED_BELOW then
        return false
    end
    q:delete(leaseKey)
    st:incr(keys.used, -1)
    if ____end == "failure" then
        ____exports.noteFailure(keys)
    elseif ____end == "success" then
        local window = math.max(
            num(st, keys.window),
            1
        )
        local limit = ____exports.windowLimit()
        if window < limit then
            st:safe_set(
                keys.window,
                math.min(window * 2, limit)
            )
        end
        if num(st, keys.backoffStep) > 0 then
            st:safe_set(keys.backoffStep, 0)
        end
    end
    return true
end
--- A failure of a request that held no lease (it went outside the window): back off all the same.
function ____exports.noteFailure(keys)
    local st = zones.state
    local now = ngx.now()
    local step = math.min(
        math.max(
            num(st, keys.backoffStep) * 2,
            BACKOFF_FIRST
        ),
        BACKOFF_MAX
    )
    st:safe_set(keys.backoffStep, step)
    st:safe_set(keys.backoffUntil, now + step)
    st:safe_set(keys.window, 1)
end
function reclaimExpired(keys, now)
    local st = zones.state
    local oldest = num(st, keys.leaseOldest)
    local last = num(st, keys.leaseSeq)
    local start = oldest
    while oldest < last do
        local v = zones.queue:get(keys.leasePrefix .. tostring(oldest + 1))
        if v ~= nil and v >= 0 then
            if v > now then
                break
            end
            settleLease(keys, oldest + 1, "success")
        end
        oldest = oldest + 1
    end
    if oldest ~= start then
        st:safe_set(keys.leaseOldest, oldest)
    end
end
function windowHasRoom(keys, now)
    local st = zones.state
    if now < num(st, keys.backoffUntil) or now < num(st, keys.readyUntil) then
        return false
    end
    local window = math.min(
        math.max(
            num(st, keys.window),
            1
        ),
        ____exports.windowLimit()
    )
    if num(st, keys.used) < window then
        return true
    end
    reclaimExpired(keys, now)
    return num(st, keys.used) < window
end
function grant(keys, lane, t, paced, deadline, now)
    local st = zones.state
    local q = zones.queue
    local mode = modeOf(keys)
    if mode == "paused" or mode == "maintenance" or mode == "outage" then
        return false
    end
    local lease = 0
    if paced then
        local n = st:incr(keys.leaseSeq, 1)
        local ok = q:safe_add(
            keys.leasePrefix .. tostring(n),
            now + settings.cfg.release_lease
        )
        if ok then
            lease = n
            st:incr(keys.used, 1)
        end
    end
    local claimKey = lane.claimPrefix .. tostring(t)
    local won, err = q:safe_add(
        claimKey,
        lease,
        math.max(deadline - now, 0) + CLAIM_SLACK
    )
    if won then
        st:incr(keys.decided, 1)
        return true
    end
    if lease > 0 then
        settleLease(keys, lease, "unused")
    end
    if err ~= "exists" then
        ngx.log(
            ngx.ERR,
            (((("intermission: cannot grant ticket " .. tostring(t)) .. " of scope ") .. keys.scope) .. ": ") .. tostring(err)
        )
        return false
    end
    q:delete(claimKey)
    return true
end
function passOverDead(keys, lane, t)
    local claimKey = lane.claimPrefix .. tostring(t)
    local ok, err = zones.queue:safe_add(claimKey, DEAD, CLAIM_SLACK)
    if ok or err ~= "exists" then
        zones.state:incr(keys.decided, 1)
    else
        zones.queue:delete(claimKey)
    end
end
function decide(keys, lane, t, paced, now)
    local q = zones.queue
    local ticketKey = lane.ticketPrefix .. tostring(t)
    local claimKey = lane.claimPrefix .. tostring(t)
    local deadline = q:get(ticketKey)
    local claim = q:get(claimKey)
    if claim ~= nil then
        if claim == LEFT then
            q:delete(claimKey)
        end
        if deadline ~= nil then
            q:delete(ticketKey)
        end
        return true
    end
    if deadline == nil then
        local seen = unwritten[lane.seq]
        if seen == nil or seen.ticket ~= t then
            unwritten[lane.seq] = {ticket = t, since = now}
            return false
        end
        if now - seen.since < GRACE then
            return false
        end
        passOverDead(keys, lane, t)
        return true
    end
    if deadline + GRACE < now then
        passOverDead(keys, lane, t)
    elseif paced and not windowHasRoom(keys, now) or not grant(
        keys,
        lane,
        t,
        paced,
        deadline,
        now
    ) then
        return false
    end
    q:delete(ticketKey)
    return true
end
--- Caller holds the lock. Starts releasing the backlog, or runs at once if there is none.
function ____exports.resumeLocked(keys, now)
    local st = zones.state
    local previous = modeOf(keys)
    if previous == "running" or previous == "draining" then
        return previous
    end
    local seq = num(st, keys.main.seq)
    st:safe_set(keys.stop, seq)
    st:safe_set(keys.window, 1)
    st:safe_set(keys.backoffUntil, 0)
    st:safe_set(keys.backoffStep, 0)
    st:safe_set(
        keys.lastPause,
        now - num(st, keys.since)
    )
    st:safe_set(keys.since, now)
    st:safe_set(keys["until"], 0)
    st:safe_set(keys.reason, "")
    local next = pending(keys) and "draining" or "running"
    if next == "draining" and settings.cfg.ready_probe ~= nil then
        ready.startWaiting(keys, now)
    end
    writeMode(keys, previous, next)
    return next
end
function pending(keys)
    local st = zones.state
    return num(st, keys.main.head) < num(st, keys.main.seq) or num(st, keys.retry.head) < num(st, keys.retry.seq)
end
function drainLane(keys, lane, stop, now)
    local st = zones.state
    local seq = num(st, lane.seq)
    local head = num(st, lane.head)
    local finished = true
    while head < seq do
        if not decide(
            keys,
            lane,
            head + 1,
            head + 1 <= stop,
            now
        ) then
            finished = false
            break
        end
        head = head + 1
        st:safe_set(lane.head, head)
    end
    return finished
end
function step(keys)
    local st = zones.state
    local now = ngx.now()
    local mode = modeOf(keys)
    if mode == "outage" then
        return
    end
    if mode == "paused" or mode == "maintenance" then
        local ____until = num(st, keys["until"])
        if ____until == 0 or now < ____until then
            return
        end
        ngx.log(ngx.NOTICE, (("intermission: audit action=auto-resume scope=" .. keys.scope) .. " reason=ttl-expired was=") .. mode)
        mode = ____exports.resumeLocked(keys, now)
    end
    if num(st, keys.used) > 0 then
        reclaimExpired(keys, now)
    end
    if not drainLane(keys, keys.retry, math.huge, now) then
        return
    end
    local done = drainLane(
        keys,
        keys.main,
        num(st, keys.stop),
        now
    )
    if mode == "draining" and done then
        writeMode(keys, "draining", "running")
    end
end
--- Grants whatever may go now. Never yields: safe in every phase.
function ____exports.advance(keys)
    local st = zones.state
    st:incr(keys.dirty, 1)
    while tryLock(keys) do
        local seen = st:get(keys.dirty)
        local ok, err = pcall(step, keys)
        st:delete(keys.lock)
        if not ok then
            ngx.log(
                ngx.ERR,
                (("intermission: release of scope " .. keys.scope) .. " failed: ") .. tostring(err)
            )
            return
        end
        if (st:get(keys.dirty)) == seen then
            return
        end
    end
end
LEFT = "L"
DEAD = "D"
GRACE = 1
CLAIM_SLACK = 60
LOCK_TTL = 1
SETTLE = 2 ^ 50
SETTLED_BELOW = -(2 ^ 50 + 2 ^ 49)
--- How often a held request with no watcher in its worker looks for its turn.
local UNWATCHED_POLL = 0.05
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 2
--- Runs fn under the scope's lock, waiting for it (content and timer phases only).
function ____exports.withScopeLock(keys, fn)
    local waited = 0
    local pause = 0.001
    while not tryLock(keys) do
        if waited >= 2 then
            return nil, ("scope " .. keys.scope) .. " is locked"
        end
        ngx.sleep(pause)
        waited = waited + pause
        pause = math.min(pause * 2, 0.01)
    end
    local ok, result = pcall(fn, keys)
    zones.state:delete(keys.lock)
    if not ok then
        return nil, tostring(result)
    end
    ____exports.advance(keys)
    return result, nil
end
--- Stops grants for `seconds` at least (more if the back-off already says so): a request
-- that failed at the upstream again spaces its next try, and, as the retry lane and the
-- queue keep their order, everyone behind it waits with it.
function ____exports.backOffAtLeast(keys, seconds)
    local st = zones.state
    local ____until = ngx.now() + seconds
    if num(st, keys.backoffUntil) < ____until then
        st:safe_set(keys.backoffUntil, ____until)
    end
end
--- Gives a lease back (header_filter, log, or a request that will not use it). Never yields.
function ____exports.returnLease(keys, lease, ____end)
    if lease <= 0 then
        return
    end
    if settleLease(keys, lease, ____end) then
        ____exports.advance(keys)
    end
end
unwritten = {}
--- Gives up ticket t. "left": out of the queue, it must not go upstream. A number: it had
-- been granted that lease first. "dead": it was passed over as gone.
local function leave(keys, lane, t)
    local q = zones.queue
    local claimKey = lane.claimPrefix .. tostring(t)
    local ok, err = q:safe_add(claimKey, LEFT)
    if ok or err ~= "exists" then
        if not ok then
            ngx.log(
                ngx.ERR,
                (((("intermission: cannot record that ticket " .. tostring(t)) .. " of scope ") .. keys.scope) .. " left: ") .. tostring(err)
            )
        end
        zones.state:incr(keys.decided, 1)
        ____exports.advance(keys)
        return "left"
    end
    local claim = q:get(claimKey)
    q:delete(claimKey)
    return type(claim) == "number" and claim or "dead"
end
--- log() for a request killed while held (worker shutdown): give its place back.
function ____exports.abandon(w)
    waiters.done(w)
    local result = leave(w.keys, w.lane, w.ticket)
    if type(result) == "number" then
        ____exports.returnLease(w.keys, result, "unused")
    end
end
--- Requests held now: tickets issued and not yet decided. `decided` is read first, so a
-- decision made while the tickets are read can only make this too high, never too low
-- (every decided ticket was issued before it was decided): max_held is never exceeded.
function ____exports.heldNow(keys)
    local st = zones.state
    local decided = num(st, keys.decided)
    return math.max(
        0,
        num(st, keys.main.seq) + num(st, keys.retry.seq) - decided
    )
end
--- Takes a ticket in `lane`: from this incr on the request counts as held, and nothing is
-- left to undo if its worker dies (an unwritten ticket is passed over as dead after the
-- grace, which counts it decided). undefined: max_held were held already; the ticket is
-- left at once, as any leave ("L").
function ____exports.admit(keys, lane)
    local st = zones.state
    local t = st:incr(lane.seq, 1)
    if t == nil then
        return nil
    end
    local held = ____exports.heldNow(keys)
    if held > settings.cfg.max_held then
        local result = leave(keys, lane, t)
        if type(result) == "number" then
            ____exports.returnLease(keys, result, "unused")
        end
        return nil
    end
    if held > num(st, keys.lastQueue) and modeOf(keys) == "paused" then
        st:safe_set(keys.lastQueue, held)
    end
    return t
end
--- A grant met at or after the request's deadline (found there, or while leaving) while
-- the scope is stopped again, with on_timeout = "reject": its lease goes back unused and
-- the request times out, as it would have had the grant come a moment later.
local function refusedAsLate(keys, deadline)
    if settings.cfg.on_timeout ~= "reject" then
        return false
    end
    ngx.update_time()
    if ngx.now() < deadline then
        return false
    end
    local mode = modeOf(keys)
    return mode == "paused" or mode == "maintenance" or mode == "outage"
end
--- Holds an admitted request (ticket t from admit) in a lane: "main" for a new request,
-- "retry" for a released one whose upstream connection failed, until its ticket is
-- granted, its deadline passes, its client goes away or the scope enters maintenance.
-- Returns the outcome and, when released, the lease the caller returns once the response
-- starts. `label` names it in the log.
function ____exports.hold(keys, lane, ticket, deadline, w, label)
    local st = zones.state
    local q = zones.queue
    local t = ticket
    while true do
        do
            local written = q:safe_add(
                lane.ticketPrefix .. tostring(t),
                deadline
            )
            local watched = waiters.track(
                w,
                keys,
                lane,
                t,
                deadline
            )
            local laneNote = lane.name == "retry" and " lane=retry" or ""
            ngx.log(
                ngx.NOTICE,
                ((((((("intermission: hold " .. label) .. " scope=") .. keys.scope) .. " ticket=") .. tostring(t)) .. laneNote) .. " state=") .. modeOf(keys)
            )
            if not written then
                ____exports.abandon(w)
                return "error", 0
            end
            ____exports.advance(keys)
            local outcome = "timeout"
            while true do
                local claim = q:get(lane.claimPrefix .. tostring(t))
                if type(claim) == "number" then
                    q:delete(lane.claimPrefix .. tostring(t))
                    waiters.done(w)
                    if refusedAsLate(keys, deadline) then
                        ____exports.returnLease(keys, claim, "unused")
                        return "timeout", 0
                    end
                    return "released", claim
                end
                if claim == DEAD then
                    break
                end
                if w.aborted then
                    outcome = "aborted"
                    break
                end
                if modeOf(keys) == "maintenance" then
                    outcome = "maintenance"
                    break
                end
                ngx.update_time()
                local remaining = deadline - ngx.now()
                if remaining <= 0 then
                    break
                end
                if watched then
                    w.sema:wait(remaining)
                else
                    w.sema:wait(math.min(remaining, UNWATCHED_POLL))
                    ____exports.advance(keys)
                end
            end
            waiters.done(w)
            local result = leave(keys, lane, t)
            if result == "left" then
                return outcome, 0
            end
            if result == "dead" then
                q:delete(lane.ticketPrefix .. tostring(t))
                ngx.update_time()
                if outcome == "timeout" and ngx.now() < deadline then
                    local next = st:incr(lane.seq, 1)
                    if next == nil then
                        return "error", 0
                    end
                    t = next
                    goto __continue81
                end
                return outcome, 0
            end
            local lease = result
            if outcome == "aborted" or refusedAsLate(keys, deadline) then
                ____exports.returnLease(keys, lease, "unused")
                return outcome, 0
            end
            return "released", lease
        end
        ::__continue81::
    end
end
waiters.setAdvance(____exports.advance)
--- Tickets not yet decided (some of them may have left and wait to be passed over).
function ____exports.queued(keys)
    local st = zones.state
    return math.max(
        0,
        num(st, keys.main.seq) - num(st, keys.main.head)
    ) + math.max(
        0,
        num(st, keys.retry.seq) - num(st, keys.retry.head)
    )
end
--- The release's progress, for status and metrics.
function ____exports.progress(keys)
    local st = zones.state
    return {
        window = math.max(
            num(st, keys.window),
            1
        ),
        leases = num(st, keys.used),
        backlog = math.max(
            0,
            num(st, keys.stop) - num(st, keys.main.head)
        ),
        backoff = math.max(
            0,
            num(st, keys.backoffUntil) - ngx.now()
        )
    }
end
return ____exports
