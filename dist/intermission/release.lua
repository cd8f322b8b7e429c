local ____exports = {}
local tryLock, settleLease, withState, failed, noteStarted, longAfter, unansweredRoom, freeLongLived, reclaimDead, reclaimExpired, windowHasRoom, grant, countPassedOver, passOverDead, decide, resetLongLived, pending, drainLane, step, takeTicketMaking, leaveForDead, LEFT, DEAD, GRACE, CLAIM_SLACK, LOCK_TTL, SETTLE, SETTLED_BELOW, BACKOFF_FIRST, BACKOFF_MAX, LONG_FACTOR, LONG_FLOOR, LONG_MIN, deadScanAt, DEAD_SCAN_EVERY, unwritten, expiryCheck, deadHeldScanAt, DEAD_HELD_SCAN_EVERY
local ____shm = require("intermission.shm")
local zones = ____shm.zones
local num = ____shm.num
local FLEET_SHARE_KEY = ____shm.FLEET_SHARE_KEY
local scopeExists = ____shm.scopeExists
local keysFor = ____shm.keysFor
local NODE_SCOPE = ____shm.NODE_SCOPE
local ____reclaim = require("intermission.reclaim")
local createLocked = ____reclaim.createLocked
local reclaimLocked = ____reclaim.reclaimLocked
local SEAL = ____reclaim.SEAL
local ____settings = require("intermission.settings")
local settings = ____settings.settings
local ____mode = require("intermission.mode")
local modeOf = ____mode.modeOf
local writeMode = ____mode.writeMode
local waiters = require("intermission.waiters")
local ready = require("intermission.ready")
local counters = require("intermission.counters")
local liveness = require("intermission.liveness")
local ____burst = require("intermission.burst")
local logOnce = ____burst.logOnce
function tryLock(keys)
    local ok = zones.state:safe_add(keys.lock, true, LOCK_TTL)
    return ok
end
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
function settleLease(keys, lease, ____end, answered)
    if answered == nil then
        answered = false
    end
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
    elseif ____end == "expired" then
        st:safe_set(keys.window, 1)
    elseif ____end == "silent" or (____end == "success" or ____end == "long") and (answered or num(st, keys.okAt) > 0) then
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
        if ____end ~= "silent" and num(st, keys.backoffStep) > 0 then
            st:safe_set(keys.backoffStep, 0)
        end
    end
    return true
end
function withState(keys, write)
    if scopeExists(keys) then
        write(keys)
        return
    end
    local ____, err = ____exports.withScopeLock(
        keys,
        function(k)
            local made, why = createLocked(k, settings.cfg.max_scopes)
            if not made then
                error(why, 0)
            end
            write(k)
            return true
        end
    )
    if err ~= nil then
        logOnce(ngx.WARN, "state", (("intermission: no back-off for scope " .. keys.scope) .. ": ") .. err)
    end
end
--- A failure of a request that held no lease (it went outside the window): back off all
-- the same. A scope with no state (reclaim.ts) is made for it if `canWait` (content
-- phase: a retry follows), else left alone (nothing to slow, no orphan keys).
function ____exports.noteFailure(keys, canWait)
    if canWait == nil then
        canWait = false
    end
    if not scopeExists(keys) then
        if canWait then
            withState(keys, failed)
        end
        return
    end
    failed(keys)
end
function failed(keys)
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
    st:safe_set(
        keys.probes,
        ____exports.windowLimit() - 1
    )
    st:safe_set(keys.okAt, 0)
end
function noteStarted(keys, seconds)
    local st = zones.state
    if not scopeExists(keys) then
        return false
    end
    if seconds ~= nil then
        local typical = num(st, keys.typical)
        st:safe_set(
            keys.typical,
            typical > 0 and typical * 0.75 + seconds * 0.25 or math.max(seconds, 0.001)
        )
    end
    st:safe_set(
        keys.okAt,
        ngx.now()
    )
    if num(st, keys.probes) > 0 then
        st:safe_set(keys.probes, 0)
    end
    return true
end
function longAfter(keys)
    local st = zones.state
    local typical = num(st, keys.typical)
    local after = math.min(
        math.max(typical * LONG_FACTOR, LONG_FLOOR),
        settings.cfg.release_lease
    )
    local silent = num(st, keys.probes)
    return silent > 0 and math.max(
        after / 2 ^ math.min(silent, 30),
        math.min(LONG_MIN, after)
    ) or after
end
function unansweredRoom(keys)
    return math.max(
        ____exports.windowLimit() - num(zones.state, keys.probes),
        1
    )
end
function freeLongLived(keys, g, granted, expired)
    local st = zones.state
    local evidence = num(st, keys.okAt) > granted
    if expired and not evidence then
        settleLease(keys, g, "expired")
        return true
    end
    local probes = num(st, keys.probes)
    if num(st, keys.used) + probes < ____exports.windowLimit() then
        st:safe_set(keys.probes, probes + 1)
        settleLease(keys, g, evidence and "long" or "silent")
        return true
    end
    if not expired then
        return false
    end
    settleLease(keys, g, "long")
    return true
end
function reclaimDead(keys, now)
    local last = deadScanAt[keys.scope]
    if last ~= nil and now - last < DEAD_SCAN_EVERY then
        return
    end
    deadScanAt[keys.scope] = now
    local st = zones.state
    local q = zones.queue
    local newest = num(st, keys.leaseSeq)
    do
        local g = num(st, keys.leaseOldest) + 1
        while g <= newest do
            local v, holder = q:get(keys.leasePrefix .. tostring(g))
            if v ~= nil and v >= 0 and liveness.gone(holder, now) then
                settleLease(keys, g, "unused")
            end
            g = g + 1
        end
    end
end
function reclaimExpired(keys, now)
    local st = zones.state
    local oldest = num(st, keys.leaseOldest)
    local last = num(st, keys.leaseSeq)
    local start = oldest
    local lease = settings.cfg.release_lease
    local after
    while oldest < last do
        local v = zones.queue:get(keys.leasePrefix .. tostring(oldest + 1))
        if v ~= nil and v >= 0 then
            local granted = v - lease
            if now - granted < math.min(LONG_MIN, lease) then
                break
            end
            if after == nil then
                after = longAfter(keys)
            end
            if now - granted < after then
                break
            end
            if not freeLongLived(keys, oldest + 1, granted, v <= now) then
                break
            end
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
        unansweredRoom(keys)
    )
    if num(st, keys.used) < window then
        return true
    end
    reclaimDead(keys, now)
    return num(st, keys.used) < window
end
function grant(keys, lane, t, paced, deadline, holder, now)
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
            now + settings.cfg.release_lease,
            0,
            holder
        )
        if ok then
            lease = n
            st:incr(keys.used, 1)
        end
    end
    local claimKey = lane.claimPrefix .. tostring(t)
    local claimTtl = math.max(deadline - now, 0) + CLAIM_SLACK
    local won, err = q:safe_add(claimKey, lease, claimTtl)
    if not won and err ~= "exists" then
        q:delete(lane.ticketPrefix .. tostring(t))
        won, err = q:safe_add(claimKey, lease, claimTtl)
        if not won and err ~= "exists" then
            q:safe_add(
                lane.ticketPrefix .. tostring(t),
                deadline,
                0,
                holder
            )
        end
    end
    if won then
        st:incr(keys.decided, 1)
        return true
    end
    if lease > 0 then
        settleLease(keys, lease, "unused")
    end
    if err ~= "exists" then
        logOnce(
            ngx.ERR,
            "grant",
            ((((((("intermission: cannot grant ticket " .. tostring(t)) .. " of scope ") .. keys.scope) .. ": ") .. tostring(err)) .. " (the queue zone is full: lua_shared_dict ") .. settings.cfg.dict) .. "_queue is too small); the release waits"
        )
        return false
    end
    q:delete(claimKey)
    return true
end
function countPassedOver(keys)
    local st = zones.state
    if num(st, keys.unclaimed) > 0 then
        local left = st:incr(keys.unclaimed, -1)
        if left ~= nil and left >= 0 then
            return
        end
        if left ~= nil then
            st:incr(keys.unclaimed, 1)
        end
    end
    st:incr(keys.decided, 1)
end
function passOverDead(keys, lane, t, holderGone)
    local q = zones.queue
    local claimKey = lane.claimPrefix .. tostring(t)
    local ok, err = q:safe_add(claimKey, DEAD, CLAIM_SLACK)
    if not ok and err ~= "exists" then
        q:delete(lane.ticketPrefix .. tostring(t))
        ok, err = q:safe_add(claimKey, DEAD, CLAIM_SLACK)
    end
    if not ok and err == "exists" then
        q:delete(claimKey)
        return true
    end
    if not ok then
        logOnce(
            ngx.ERR,
            "pass",
            ((((((("intermission: cannot pass over ticket " .. tostring(t)) .. " of scope ") .. keys.scope) .. ": ") .. tostring(err)) .. " (the queue zone is full: lua_shared_dict ") .. settings.cfg.dict) .. "_queue is too small); the release waits"
        )
        return false
    end
    countPassedOver(keys)
    if holderGone then
        counters.count(keys, "aborted")
    end
    return true
end
function decide(keys, lane, t, paced, now)
    local q = zones.queue
    local ticketKey = lane.ticketPrefix .. tostring(t)
    local claimKey = lane.claimPrefix .. tostring(t)
    local deadline, holder = q:get(ticketKey)
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
        if seen == nil or t < seen.ticket or t > seen.upto then
            unwritten[lane.seq] = {
                ticket = t,
                since = now,
                upto = num(zones.state, lane.seq)
            }
            return false
        end
        if now - seen.since < GRACE then
            return false
        end
        return passOverDead(keys, lane, t, false)
    end
    local holderGone = liveness.gone(holder, now)
    if holderGone or deadline + GRACE < now then
        if not passOverDead(keys, lane, t, holderGone) then
            return false
        end
    elseif paced and not windowHasRoom(keys, now) or not grant(
        keys,
        lane,
        t,
        paced,
        deadline,
        holder,
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
    local learnt = num(st, keys.used) > 0 or num(st, keys.probes) > 0 or num(st, keys.backoffStep) > 0 or now < num(st, keys.backoffUntil)
    if not learnt then
        resetLongLived(keys)
    end
    zones.counters:set(
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
function resetLongLived(keys)
    local st = zones.state
    st:safe_set(keys.okAt, 0)
    st:safe_set(keys.typical, 0)
    st:safe_set(keys.probes, 0)
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
        if expiryCheck.fn ~= nil and expiryCheck.fn(keys, now) then
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
    if done and (mode == "running" or mode == "draining") then
        reclaimLocked(keys, now)
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
            break
        end
        if (st:get(keys.dirty)) == seen then
            break
        end
    end
    waiters.wakeDue(keys)
end
function takeTicketMaking(keys, lane)
    local taken, err = ____exports.withScopeLock(
        keys,
        function(k)
            local made, why = createLocked(k, settings.cfg.max_scopes)
            if not made then
                return why
            end
            local n, incrErr = zones.state:incr(lane.seq, 1)
            return n or "cannot take a ticket: " .. tostring(incrErr)
        end
    )
    if type(taken) == "number" then
        return taken
    end
    logOnce(
        ngx.WARN,
        "ticket-scope",
        ((("intermission: cannot hold a request in scope " .. keys.scope) .. ": ") .. tostring(taken or err)) .. "; answering 503"
    )
    return nil
end
function leaveForDead(keys)
    ngx.update_time()
    local now = ngx.now()
    local last = deadHeldScanAt[keys.scope]
    if last ~= nil and now - last < DEAD_HELD_SCAN_EVERY then
        return false
    end
    deadHeldScanAt[keys.scope] = now
    local st = zones.state
    local q = zones.queue
    local freed = false
    for ____, lane in ipairs({keys.retry, keys.main}) do
        local seq = num(st, lane.seq)
        do
            local t = num(st, lane.head) + 1
            while t <= seq do
                local deadline, holder = q:get(lane.ticketPrefix .. tostring(t))
                if deadline ~= nil and liveness.gone(holder, now) then
                    local ok = q:safe_add(
                        lane.claimPrefix .. tostring(t),
                        LEFT
                    )
                    if ok then
                        st:incr(keys.decided, 1)
                        counters.count(keys, "aborted")
                        freed = true
                    end
                end
                t = t + 1
            end
        end
    end
    return freed
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
LONG_FACTOR = 4
LONG_FLOOR = 0.4
LONG_MIN = 0.02
--- Stops grants for `seconds` at least (more if the back-off already says so): a request
-- that failed at the upstream again spaces its next try, and, as the retry lane and the
-- queue keep their order, everyone behind it waits with it.
function ____exports.backOffAtLeast(keys, seconds)
    local ____until = ngx.now() + seconds
    withState(
        keys,
        function(k)
            if num(zones.state, k.backoffUntil) < ____until then
                zones.state:safe_set(k.backoffUntil, ____until)
            end
        end
    )
end
--- Gives a lease back (header_filter, log, or a request that will not use it). Never yields.
-- `started`: seconds from its release to its response's start. A lease the advancer freed
-- as long-lived still reports how its response went: a success is the evidence that the
-- upstream answers, a gateway failure backs off as any other.
function ____exports.returnLease(keys, lease, ____end, started)
    if lease <= 0 then
        return
    end
    local answered = ____end == "success" and noteStarted(keys, started)
    if settleLease(keys, lease, ____end, answered) then
        ____exports.advance(keys)
    elseif ____end == "failure" then
        ____exports.noteFailure(keys)
    end
end
deadScanAt = {}
DEAD_SCAN_EVERY = 0.2
unwritten = {}
expiryCheck = {}
function ____exports.setExpiryCheck(fn)
    expiryCheck.fn = fn
end
--- Whether default (the node) is paused or in maintenance now (an expired pause no longer
-- counts): a scope's outage does not end meanwhile (outage.ts), so that its held requests
-- wait for the node's resume.
function ____exports.nodeStopped(now)
    local node = keysFor(NODE_SCOPE)
    local mode = modeOf(node)
    if mode ~= "paused" and mode ~= "maintenance" then
        return false
    end
    local ____until = num(zones.state, node["until"])
    return ____until == 0 or now < ____until
end
--- Gives up ticket t. "left": out of the queue, it must not go upstream. A number: it had
-- been granted that lease first. "dead": it was passed over as gone. `written`: its
-- deadline key w|t was written (it was held), so the advancer may be granting it now.
local function leave(keys, lane, t, written)
    local q = zones.queue
    local claimKey = lane.claimPrefix .. tostring(t)
    local ok, err = q:safe_add(claimKey, LEFT)
    if not ok and err ~= "exists" and written then
        q:delete(lane.ticketPrefix .. tostring(t))
        ok, err = q:safe_add(claimKey, LEFT)
    end
    if ok or err ~= "exists" then
        if ok then
            zones.state:incr(keys.decided, 1)
        else
            logOnce(
                ngx.ERR,
                "leave",
                ((((((("intermission: cannot record that ticket " .. tostring(t)) .. " of scope ") .. keys.scope) .. " left: ") .. tostring(err)) .. " (the queue zone is full: lua_shared_dict ") .. settings.cfg.dict) .. "_queue is too small)"
            )
            if not written then
                zones.state:incr(keys.unclaimed, 1)
                zones.state:incr(keys.decided, 1)
            end
        end
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
    local result = leave(w.keys, w.lane, w.ticket, true)
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
--- max_held are held already: a request is refused before it takes anything.
function ____exports.atCapacity(keys)
    if ____exports.heldNow(keys) < settings.cfg.max_held then
        return false
    end
    return not leaveForDead(keys) or ____exports.heldNow(keys) >= settings.cfg.max_held
end
--- Gives up a ticket that was never handed to hold(): as any leave ("L").
local function giveUp(keys, lane, t)
    local result = leave(keys, lane, t, false)
    if type(result) == "number" then
        ____exports.returnLease(keys, result, "unused")
    end
end
--- Writes ticket t's deadline (w|t), its worker's pid in the flags (a ticket of a worker
-- that is gone is passed over). False: the queue zone is full; the ticket is given up
-- ("L") and the request is to be answered 503, never forwarded.
local function writeTicket(keys, lane, t, deadline, again)
    local written, err = zones.queue:safe_add(
        lane.ticketPrefix .. tostring(t),
        deadline,
        0,
        liveness.me()
    )
    if written then
        return true
    end
    logOnce(
        ngx.ERR,
        "ticket",
        (((((("intermission: cannot hold a request in scope " .. keys.scope) .. again) .. ": ") .. tostring(err)) .. " (the queue zone is full: lua_shared_dict ") .. settings.cfg.dict) .. "_queue is too small); answering 503"
    )
    giveUp(keys, lane, t)
    return false
end
--- How long a ticket taker waits at most for a reclaim that sealed its lane (reclaim.ts) to end.
local SEALED_WAIT = LOCK_TTL
--- Takes ticket t = incr(seq) in `lane`, whatever a reclaim of the scope (reclaim.ts) is
-- doing: a sealed lane (t <= 0) is waited out: its ticket stands once the seal is undone
-- in the same incarnation (t + SEAL); if the scope is gone (or was never made), it is
-- made again and the ticket taken under its lock, where no reclaim runs. Access phase
-- only (it may sleep, for a moment). Undefined: no ticket (max_scopes met, the lock, the
-- zone full); the caller logs nothing more than its refusal.
local function takeTicket(keys, lane)
    local st = zones.state
    local mark = st:get(keys.made)
    if mark ~= nil then
        local t = st:incr(lane.seq, 1)
        if t ~= nil and t > 0 then
            return t
        end
        if t ~= nil then
            local waited = 0
            while waited < SEALED_WAIT do
                local v = st:get(lane.seq)
                if v == nil then
                    break
                end
                if v > 0 then
                    if (st:get(keys.made)) == mark then
                        return t + SEAL
                    end
                    break
                end
                ngx.sleep(0.001)
                waited = waited + 0.001
            end
        end
    end
    return takeTicketMaking(keys, lane)
end
--- Takes a ticket in `lane` and writes its deadline (w|t): from the incr on the request
-- counts as held, and nothing is left to undo if its worker dies (an unwritten ticket is
-- passed over as dead after the grace, which counts it decided).
-- 
-- A refusal costs the queue nothing that outlives the request: max_held is checked before
-- the ticket is taken, so a storm of refused requests takes no ticket, writes no claim and
-- leaves nothing for the head to pass. Only the race after the incr (several workers past
-- the check at once) gives a ticket up again ("L", passed over by the head later): at
-- most one per worker and freed place. A ticket whose deadline cannot be written (the
-- queue zone is full) is given up too: the request is answered 503, never forwarded.
function ____exports.admit(keys, lane, deadline, capacityChecked)
    if capacityChecked == nil then
        capacityChecked = false
    end
    if not capacityChecked and ____exports.atCapacity(keys) then
        return nil, "held"
    end
    local t = takeTicket(keys, lane)
    if t == nil then
        return nil, "full"
    end
    local held = ____exports.heldNow(keys)
    if held > settings.cfg.max_held then
        giveUp(keys, lane, t)
        return nil, "held"
    end
    if not writeTicket(
        keys,
        lane,
        t,
        deadline,
        ""
    ) then
        return nil, "full"
    end
    if held > num(zones.counters, keys.lastQueue) and modeOf(keys) == "paused" then
        zones.counters:set(keys.lastQueue, held)
    end
    return t, nil
end
deadHeldScanAt = {}
DEAD_HELD_SCAN_EVERY = 1
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
--- Holds an admitted request (ticket t from admit, its deadline written) in a lane: "main" for a new request,
-- "retry" for a released one whose upstream connection failed, until its ticket is
-- granted, its deadline passes, its client goes away or the scope enters maintenance.
-- Returns the outcome and, when released, the lease the caller returns once the response
-- starts. `label` names it in the log.
function ____exports.hold(keys, lane, ticket, deadline, w, label)
    local q = zones.queue
    local t = ticket
    while true do
        do
            if t ~= ticket and not writeTicket(
                keys,
                lane,
                t,
                deadline,
                " again"
            ) then
                return "error", 0
            end
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
                "intermission: hold ",
                label,
                " scope=",
                keys.scope,
                " ticket=",
                t,
                laneNote,
                " state=",
                modeOf(keys)
            )
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
            local result = leave(keys, lane, t, true)
            if result == "left" then
                return outcome, 0
            end
            if result == "dead" then
                q:delete(lane.ticketPrefix .. tostring(t))
                ngx.update_time()
                if outcome == "timeout" and ngx.now() < deadline then
                    local next = takeTicket(keys, lane)
                    if next == nil then
                        return "error", 0
                    end
                    t = next
                    goto __continue155
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
        ::__continue155::
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
