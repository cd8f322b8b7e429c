local ____exports = {}
local maxHoldHere, watchAbort, onAbort, forward, answer, refuse, holdRequest, ownScopeFirst, holdAndSettle, settle, leaseEnd, refuseRetry, exitError, holdNeverHeld, replayed, ngxVar, CLIENT_CLOSED, TRY_SPREAD, NOT_APPLIED_SPREAD, exited
local ____shm = require("intermission.shm")
local keysFor = ____shm.keysFor
local zones = ____shm.zones
local NODE_SCOPE = ____shm.NODE_SCOPE
local inflight = require("intermission.inflight")
local ____fleetmode = require("intermission.fleetmode")
local fleet = ____fleetmode.fleet
local ____settings = require("intermission.settings")
local settings = ____settings.settings
local state = require("intermission.state")
local release = require("intermission.release")
local ready = require("intermission.ready")
local waiters = require("intermission.waiters")
local counters = require("intermission.counters")
local ____respond = require("intermission.respond")
local unavailable = ____respond.unavailable
local replay = require("intermission.replay")
local ____burst = require("intermission.burst")
local logOnce = ____burst.logOnce
local outage = require("intermission.outage")
local ____record = require("intermission.record")
local requestKey = ____record.requestKey
local startTime = ____record.startTime
local lookup = ____record.lookup
local remember = ____record.remember
local rememberForwarded = ____record.rememberForwarded
local forget = ____record.forget
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
    return ____exports.DEFAULT_SCOPE
end
function maxHoldHere()
    local v = ngxVar.intermission_max_time
    if v ~= nil then
        local n = tonumber(v)
        if n ~= nil and n > 0 then
            return n
        end
    end
    return settings.cfg.max_hold
end
function watchAbort()
    local abortOk, abortErr = ngx.on_abort(onAbort)
    if abortOk == nil and abortErr ~= "duplicate call" then
        ngx.log(
            ngx.INFO,
            "intermission: client aborts not detected while held: " .. tostring(abortErr)
        )
    end
end
function onAbort()
    local rec = lookup(requestKey())
    if rec ~= nil and type(rec) == "table" then
        local w = rec.waiter
        if w ~= nil then
            w.aborted = true
            waiters.wake(w)
        end
    end
end
function forward(r, rec)
    if rec == nil then
        rememberForwarded(
            r,
            startTime()
        )
    else
        rec.state = "forwarded"
    end
    inflight.enter()
end
function answer(r, rec, keys, why)
    if rec == nil then
        remember(
            r,
            {
                keys = keys,
                state = "answered",
                lease = 0,
                start = startTime(),
                deadline = 0
            }
        )
    else
        rec.state = "answered"
    end
    local reason = why == "maintenance" and state.snapshot(keys).reason or ""
    return unavailable(why, settings.cfg.retry_after, reason)
end
function refuse(r, rec, keys, requestId)
    counters.count(keys, "rejected")
    logOnce(
        ngx.WARN,
        "refused",
        (((("intermission: queue full, rejected request_id=" .. requestId) .. " scope=") .. keys.scope) .. " max_held=") .. tostring(settings.cfg.max_held)
    )
    return answer(r, rec, keys, "full")
end
function holdRequest(r, keys, bound)
    local requestId = ngxVar.request_id or "-"
    if release.atCapacity(keys) then
        return refuse(r, nil, keys, requestId)
    end
    local w, err = waiters.newWaiter(keys)
    if w == nil then
        logOnce(
            ngx.ERR,
            "waiter",
            (("intermission: cannot hold request_id=" .. requestId) .. ", answering 503: ") .. tostring(err)
        )
        counters.count(keys, "rejected")
        return answer(r, nil, keys, "full")
    end
    local rec = {
        keys = keys,
        state = "holding",
        lease = 0,
        waiter = w,
        start = startTime(),
        deadline = 0,
        requestId = requestId,
        uri = ngxVar.uri or "",
        args = ngxVar.args or "",
        internal = ngx.req.is_internal()
    }
    remember(r, rec)
    watchAbort()
    rec.deadline = ngx.now() + math.min(
        maxHoldHere(),
        bound or math.huge
    )
    local ticket = release.admit(keys, keys.main, rec.deadline, true)
    if ticket == nil then
        return refuse(r, rec, keys, requestId)
    end
    counters.count(keys, "held")
    if bound ~= nil then
        counters.count(keys, "outage_held")
    end
    if not holdAndSettle(
        r,
        rec,
        keys,
        keys.main,
        ticket,
        w,
        requestId
    ) then
        return
    end
    if keys.scope == ____exports.DEFAULT_SCOPE and rec.state == "released" then
        ownScopeFirst(r, rec)
    end
end
function ownScopeFirst(r, rec)
    local own = ____exports.scopeOf()
    if own == ____exports.DEFAULT_SCOPE then
        return
    end
    local keys = keysFor(own)
    local mode = state.settle(keys)
    if mode ~= "paused" and mode ~= "maintenance" then
        return
    end
    inflight.leave()
    local lease = rec.lease
    rec.lease = 0
    if lease > 0 then
        release.returnLease(rec.keys, lease, "unused")
    end
    forget(r)
    if mode == "maintenance" then
        counters.count(keys, "rejected")
        return answer(r, nil, keys, "maintenance")
    end
    return holdRequest(r, keys)
end
function holdAndSettle(r, rec, keys, lane, ticket, w, requestId)
    rec.state = "holding"
    rec.waiter = w
    local started = ngx.now()
    local laneNote = lane.name == "retry" and " lane=retry" or ""
    local outcome, lease = release.hold(
        keys,
        lane,
        ticket,
        rec.deadline,
        w,
        "request_id=" .. requestId
    )
    rec.waiter = nil
    ngx.update_time()
    local waited = ngx.now() - started
    counters.observeHold(keys, waited)
    ngx.log(
        ngx.NOTICE,
        "intermission: leave request_id=",
        requestId,
        " scope=",
        keys.scope,
        laneNote,
        " waited=",
        string.format("%.3f", waited),
        "s outcome=",
        outcome
    )
    return settle(
        r,
        rec,
        keys,
        outcome,
        lease
    )
end
function settle(r, rec, keys, outcome, lease)
    local cfg = settings.cfg
    if outcome == "released" then
        counters.count(keys, "released")
        rec.lease = lease
        rec.released = ngx.now()
        rec.state = "released"
        inflight.enter()
        return true
    end
    if outcome == "aborted" then
        counters.count(keys, "aborted")
        rec.state = "answered"
        return ngx.exit(499)
    end
    if outcome == "maintenance" then
        counters.count(keys, "maintenance")
        return answer(r, rec, keys, "maintenance")
    end
    if outcome == "error" then
        counters.count(keys, "timed_out")
        return answer(r, rec, keys, "full")
    end
    counters.count(keys, "timed_out")
    if cfg.on_timeout == "pass" then
        counters.count(keys, "passed")
        forward(r, rec)
        return true
    end
    return answer(r, rec, keys, "timeout")
end
function leaseEnd(status)
    if status == CLIENT_CLOSED then
        return "unused"
    end
    return settings.cfg.failure_statuses[status] == true and "failure" or "success"
end
function refuseRetry(rec, keys, status)
    rec.state = "answered"
    counters.count(keys, "rejected")
    if settings.cfg.on_timeout == "pass" then
        return exitError(
            requestKey(),
            status >= 500 and status or 502
        )
    end
    return unavailable("timeout", settings.cfg.retry_after, "")
end
function exitError(r, status)
    exited.req = r
    exited.start = startTime()
    return ngx.exit(status)
end
function holdNeverHeld(r, start, status, declined)
    local failed = status >= 500 and status or 502
    local keys = keysFor(____exports.scopeOf())
    local requestId = ngxVar.request_id or "-"
    local uri = ngxVar.uri or ""
    local args = ngxVar.args or ""
    local addr = ngxVar.upstream_addr
    local path, rawArgs, why = replay.target(uri, args)
    if path == nil then
        ngx.log(
            ngx.WARN,
            (((("intermission: request_id=" .. requestId) .. " scope=") .. keys.scope) .. " not held through the outage: ") .. tostring(why)
        )
        return exitError(r, failed)
    end
    if not declined and not outage.probeable(addr) then
        logOnce(ngx.WARN, "unprobeable", ((((("intermission: request_id=" .. requestId) .. " scope=") .. keys.scope) .. " not held through the outage: upstream address ") .. (addr or "-")) .. " cannot be probed (an upstream group with no live server: see the README, \"Upstream groups of several servers\")")
        return exitError(r, failed)
    end
    ngx.update_time()
    local deadline = start + math.min(
        settings.cfg.outage_hold,
        maxHoldHere()
    )
    if ngx.now() >= deadline then
        return exitError(r, failed)
    end
    local mode = declined and state.modeOf(keys) or outage.enter(keys, addr)
    if mode == nil then
        return exitError(r, failed)
    end
    if mode == "outage" and not declined and outage.outlasted(keys) then
        counters.count(keys, "rejected")
        counters.count(keys, "fail_fast")
        return unavailable("timeout", settings.cfg.retry_after, "")
    end
    inflight.leave()
    if mode ~= "outage" and not declined then
        release.noteFailure(keys)
    end
    local rec = {
        keys = keys,
        state = "retrying",
        lease = 0,
        start = start,
        deadline = deadline,
        tries = 1,
        requestId = requestId,
        uri = uri,
        args = args,
        internal = true,
        failStatus = status,
        notApplied = declined
    }
    remember(r, rec)
    if not declined then
        counters.count(keys, "outage_held")
    end
    return ngx.exec(path, rawArgs)
end
function replayed(r, rec)
    local keys = rec.keys
    local requestId = rec.requestId or "-"
    local status = rec.failStatus or 502
    local uri = ngxVar.uri or ""
    local args = ngxVar.args or ""
    if uri ~= rec.uri or args ~= rec.args then
        ngx.log(
            ngx.WARN,
            ((((((((((("intermission: request_id=" .. requestId) .. " scope=") .. keys.scope) .. " not retried: sent back, it arrived as ") .. uri) .. "?") .. args) .. ", not as first held (") .. tostring(rec.uri)) .. "?") .. tostring(rec.args)) .. ")"
        )
        rec.state = "answered"
        return ngx.exit(status >= 500 and status or 502)
    end
    local w, err = waiters.newWaiter(keys)
    if w == nil then
        ngx.log(
            ngx.ERR,
            (("intermission: cannot hold request_id=" .. requestId) .. " again: ") .. tostring(err)
        )
        rec.state = "answered"
        return ngx.exit(502)
    end
    watchAbort()
    local addr = rec.failedAddr
    if rec.notApplied == true and ngx.now() < rec.deadline then
        if settings.cfg.ready_probe ~= nil and not ready.waiting(keys) then
            ready.startWaiting(
                keys,
                ngx.now()
            )
        else
            release.backOffAtLeast(
                keys,
                (rec.deadline - ngx.now()) * (NOT_APPLIED_SPREAD[rec.tries or 1] or 0.5)
            )
        end
    elseif ngx.now() < rec.deadline and (addr == nil or not ready.waitForConnect(keys, addr, rec.deadline)) then
        local spread = TRY_SPREAD[rec.tries or 1] or 0
        if spread > 0 then
            release.backOffAtLeast(
                keys,
                (rec.deadline - ngx.now()) * spread
            )
        end
    end
    local ticket
    if ngx.now() < rec.deadline then
        ticket = release.admit(keys, keys.retry, rec.deadline)
    end
    if ticket == nil then
        return refuseRetry(rec, keys, status)
    end
    counters.count(keys, "retried")
    holdAndSettle(
        r,
        rec,
        keys,
        keys.retry,
        ticket,
        w,
        requestId
    )
end
--- The response starts: a released request's window lease comes back.
function ____exports.responseStarted(rec)
    if rec.lease > 0 then
        local lease = rec.lease
        rec.lease = 0
        release.returnLease(
            rec.keys,
            lease,
            leaseEnd(ngx.status),
            ngx.now() - (rec.released or ngx.now())
        )
    end
end
--- The request is done (log phase), or its record was found stale: undo what it took.
function ____exports.settleRecord(rec)
    if rec.state == "holding" then
        if rec.waiter ~= nil then
            release.abandon(rec.waiter)
            counters.count(rec.keys, "aborted")
        end
    elseif rec.state == "released" or rec.state == "forwarded" then
        inflight.leave()
        ____exports.responseStarted(rec)
    end
    rec.state = "answered"
end
ngxVar = ngx.var
--- The scope of a location that sets none, and the whole node (see gate()).
____exports.DEFAULT_SCOPE = NODE_SCOPE
--- State-zone key: the path prefixes of the control locations, learned by control().
local CONTROL_PREFIX_KEY = "control_prefix"
--- Control locations remembered at most (a config has one or two).
local MAX_CONTROL_PREFIXES = 16
--- The control locations' path prefixes, newline-separated ("\n/a/\n/b/\n", the newest
-- last), or undefined before the first control request.
local function controlPrefixes()
    local known = zones.state:get(CONTROL_PREFIX_KEY)
    if type(known) ~= "string" then
        return nil
    end
    local list = known
    return string.sub(list, 1, 1) == "\n" and list or ("\n" .. list) .. "\n"
end
--- control(): remembers where the control API lives, so that access() never holds its
-- requests when the hooks sit at server level (see alwaysPasses). Every control location
-- is kept.
function ____exports.learnControlPrefix(uri)
    local prefix = string.match(uri, "^(.*/)[^/]+/*$")
    if prefix == nil or prefix == "/" then
        return
    end
    local list = controlPrefixes() or "\n"
    if (string.find(list, ("\n" .. prefix) .. "\n", 1, true)) ~= nil then
        return
    end
    list = (list .. prefix) .. "\n"
    local ____, count = string.gsub(list, "\n", "\n")
    if count - 1 > MAX_CONTROL_PREFIXES then
        list = (string.gsub(list, "^\n[^\n]*", "", 1))
    end
    zones.state:safe_set(CONTROL_PREFIX_KEY, list)
end
--- Whether uri lies under one of the control locations.
local function isControl(uri)
    local prefixes = controlPrefixes()
    if prefixes == nil then
        return false
    end
    local from = 2
    while from <= #prefixes do
        local to = string.find(prefixes, "\n", from, true)
        if to == nil then
            return false
        end
        if string.sub(uri, 1, to - from) == string.sub(prefixes, from, to - 1) then
            return true
        end
        from = to + 1
    end
    return false
end
local function alwaysPasses(uri)
    local cfg = settings.cfg
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
        if isControl(uri) then
            return true
        end
    end
    local pattern = ngxVar.intermission_privileged_user_agent
    if pattern == nil or pattern == "" then
        pattern = cfg.privileged_user_agent
    end
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
--- A request access() has seen before: an internal redirect, or a reused pointer.
local function reentered(r, seen)
    local start = startTime()
    if type(seen) == "number" then
        if seen == start then
            return true
        end
        inflight.leave()
    else
        local rec = seen
        if rec.start == start then
            return true
        end
        ____exports.settleRecord(rec)
    end
    forget(r)
    return false
end
--- The access hook once some scope is not running, or on a redirect.
-- 
-- The scope `default` is the whole node: its pause or maintenance (what a control
-- request naming no scope gets from a control location that sets none) applies to every
-- request whose own scope runs, which is then held in default's queue, in arrival order
-- with default's own requests. A scope's own pause or maintenance comes first for its
-- requests; `scope=X` narrows a pause to X. So the README's snippet, with a scope in the
-- protected location and none in the control location, protects its site.
function ____exports.gate()
    local r = requestKey()
    local seen = lookup(r)
    if seen ~= nil then
        if type(seen) == "table" and seen.state == "retrying" and seen.start == startTime() then
            return replayed(r, seen)
        end
        if reentered(r, seen) then
            return
        end
    end
    if settings.cfg.store == "redis" then
        fleet.sync.awaitFirstSync()
    end
    local keys = keysFor(____exports.scopeOf())
    local mode = state.settle(keys)
    if keys.scope ~= ____exports.DEFAULT_SCOPE and mode ~= "paused" and mode ~= "maintenance" then
        local nodeKeys = keysFor(____exports.DEFAULT_SCOPE)
        local nodeMode = state.settle(nodeKeys)
        local nodeStops = nodeMode == "paused" or nodeMode == "maintenance"
        if nodeStops or mode == "running" and nodeMode == "draining" then
            keys = nodeKeys
            mode = nodeMode
        end
    end
    local passes = alwaysPasses(ngxVar.uri)
    if mode == "running" then
        if not passes then
            counters.passedUnheld(keys)
        end
        return forward(r, nil)
    end
    if passes then
        return forward(r, nil)
    end
    if mode == "maintenance" then
        counters.count(keys, "rejected")
        return answer(r, nil, keys, "maintenance")
    end
    if mode == "outage" then
        outage.ensureProber(keys)
        if keys.scope == ____exports.DEFAULT_SCOPE then
            return forward(r, nil)
        end
        local bound = outage.holdSeconds(keys)
        if bound == 0 then
            counters.count(keys, "rejected")
            counters.count(keys, "fail_fast")
            return answer(r, nil, keys, "timeout")
        end
        return holdRequest(r, keys, bound)
    end
    return holdRequest(r, keys)
end
CLIENT_CLOSED = 499
--- The upstream connection of this request failed without sending it a byte
-- ($upstream_bytes_sent is 0 for every try): the application never saw it, so it is
-- safe to send again, whatever the method.
local function neverSent()
    local sent = ngxVar.upstream_bytes_sent
    if sent == nil or sent == "" then
        return false
    end
    local nonZero = string.find(sent, "[1-9]")
    return nonZero == nil
end
--- nginx's internal redirects per request (NGX_HTTP_MAX_URI_CHANGES): one more is its own 500.
local NGINX_REDIRECTS = 10
--- Internal redirects the README allows between the client and proxy_pass (a try_files
-- into a named location, say), besides the error_page jump to the retry location.
local REDIRECTS_ALLOWED = 1
--- Retries at most for a request with `k` redirects on its way to proxy_pass. A retry
-- replays the request from its start (replay.ts), so it costs those k again, plus the
-- ngx.exec back and the error_page jump of its failure: 1 + k for the first sending, then
-- 2 + k per retry, all within nginx's ten. k = 1 (the README's bound): 2 retries, 8 of 10.
local function maxTries(k)
    return math.floor((NGINX_REDIRECTS - 1 - k) / (2 + k))
end
--- Redirects the request has visibly used on its way to proxy_pass (nginx does not say
-- how many: r->uri_changes is a bitfield whose offset in ngx_http_request_t depends on
-- nginx's version and build, so not read through FFI): one before its first hold if it
-- was internal there with the client's own $uri and $args (a named location or a
-- redirect, not a rewrite), one after it if its $uri or $args changed before it failed.
local function redirectsSeen(rec, asSent)
    local before = rec.internal == true and asSent and 1 or 0
    local after = ((ngxVar.uri or "") ~= rec.uri or (ngxVar.args or "") ~= rec.args) and 1 or 0
    return before + after
end
TRY_SPREAD = {[2] = 0.5}
NOT_APPLIED_SPREAD = {[1] = 0.25, [2] = 0.5}
--- Where the application's "not applied" answer points: the retry location (README).
local RETRY_LOCATION = "@intermission_retry"
--- The application said "I did not apply this request, send it again": an
-- X-Accel-Redirect to the retry location. nginx honours it (a named location keeps the
-- method and the buffered body, and discards the response's body), so the request is
-- here with bytes sent, but by the application's word as if it had never seen it.
local function notApplied()
    return ngxVar.upstream_http_x_accel_redirect == RETRY_LOCATION
end
exited = {req = 0, start = 0}
--- nginx's reason phrases for the statuses retry() answers.
local REASON = {[500] = "Internal Server Error", [502] = "Bad Gateway", [503] = "Service Temporarily Unavailable", [504] = "Gateway Time-out"}
--- The error page nginx itself would send (server_tokens off), sent directly: no error_page applies.
local function sendError(status)
    exited.req = 0
    local title = (tostring(status) .. " ") .. (REASON[status] or "Bad Gateway")
    ngx.status = status
    ngx.header["Content-Type"] = "text/html"
    ngx.print(((("<html>\r\n<head><title>" .. title) .. "</title></head>\r\n<body>\r\n<center><h1>") .. title) .. "</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
    return ngx.exit(ngx.HTTP_OK)
end
--- The gateway error nginx made, for the answer when the request is not retried. Inside
-- the error_page's target $status no longer says it (`error_page 502 504 = ...` leaves
-- the status to the target), so a proxy_read_timeout's 504 would go out as 502: the last
-- status of $upstream_status is the one nginx would have answered.
local function gatewayStatus()
    local status = tonumber(ngxVar.status or "") or 0
    if status >= 500 then
        return status
    end
    local last = string.match(ngxVar.upstream_status or "", "(%d+)%D*$")
    local upstream = tonumber(last or "") or 0
    return upstream >= 500 and upstream or 502
end
--- content_by_lua of the retry location (error_page 502 504 =
-- 
-- @intermission_retry ): a
-- released request whose upstream connection failed before a byte was sent, and that
-- can be sent again exactly as it was (replay.target), is sent back to where it started
-- by ngx.exec; its access() holds it at the head of the queue (the retry lane) and lets
-- it go once granted again (replayed). Any other request: the error as nginx made it.
function ____exports.retry()
    local r = requestKey()
    local failed = gatewayStatus()
    if exited.req == r and exited.start == startTime() then
        return sendError(failed)
    end
    local seen = lookup(r)
    local declined = notApplied()
    if type(seen) == "number" and settings.cfg.outage_hold > 0 and (declined or neverSent()) then
        return holdNeverHeld(r, seen, failed, declined)
    end
    if seen == nil or type(seen) == "number" or seen.state ~= "released" or not (declined or neverSent()) then
        return exitError(r, failed)
    end
    local rec = seen
    local keys = rec.keys
    local requestId = rec.requestId or "-"
    local path, args, why, asSent = replay.target(rec.uri or "", rec.args or "")
    if path == nil then
        ngx.log(
            ngx.WARN,
            (((("intermission: request_id=" .. requestId) .. " scope=") .. keys.scope) .. " not retried: ") .. tostring(why)
        )
        return exitError(r, failed)
    end
    inflight.leave()
    local lease = rec.lease
    rec.lease = 0
    if lease > 0 then
        release.returnLease(keys, lease, "failure")
    else
        release.noteFailure(keys, true)
    end
    ngx.update_time()
    local tries = (rec.tries or 0) + 1
    rec.tries = tries
    local most = maxTries(math.max(
        REDIRECTS_ALLOWED,
        redirectsSeen(rec, asSent)
    ))
    if tries > most then
        ngx.log(
            ngx.WARN,
            ((((("intermission: request_id=" .. requestId) .. " scope=") .. keys.scope) .. " failed at the upstream ") .. tostring(most + 1)) .. " times, not retried again"
        )
        return refuseRetry(rec, keys, failed)
    end
    if ngx.now() >= rec.deadline then
        return refuseRetry(rec, keys, failed)
    end
    rec.state = "retrying"
    local ____declined_0
    if declined then
        ____declined_0 = nil
    else
        ____declined_0 = ngxVar.upstream_addr
    end
    rec.failedAddr = ____declined_0
    rec.notApplied = declined
    rec.failStatus = failed
    return ngx.exec(path, args)
end
return ____exports
