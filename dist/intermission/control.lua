local ____exports = {}
local ____shm = require("intermission.shm")
local keysFor = ____shm.keysFor
local zones = ____shm.zones
local num = ____shm.num
local knownScopes = ____shm.knownScopes
local scopeExists = ____shm.scopeExists
local SCOPE_COUNT_KEY = ____shm.SCOPE_COUNT_KEY
local ____reclaim = require("intermission.reclaim")
local sweep = ____reclaim.sweep
local ____settings = require("intermission.settings")
local settings = ____settings.settings
local state = require("intermission.state")
local release = require("intermission.release")
local ready = require("intermission.ready")
local outage = require("intermission.outage")
local counters = require("intermission.counters")
local params = require("intermission.params")
local ____respond = require("intermission.respond")
local json = ____respond.json
local jsonError = ____respond.jsonError
local ____gate = require("intermission.gate")
local scopeOf = ____gate.scopeOf
local learnControlPrefix = ____gate.learnControlPrefix
local NODE_SCOPE = ____gate.DEFAULT_SCOPE
local ____metrics = require("intermission.metrics")
local renderMetrics = ____metrics.renderMetrics
local inflight = require("intermission.inflight")
local ____fleetmode = require("intermission.fleetmode")
local fleet = ____fleetmode.fleet
local ____record = require("intermission.record")
local lookup = ____record.lookup
local forget = ____record.forget
local requestKey = ____record.requestKey
local unsettled = require("intermission.fleet.unsettled")
local READS = {status = true, metrics = true}
local MUTATIONS = {pause = true, resume = true, maintenance = true}
local LEGACY = {control = true, enable = true, disable = true}
--- Compares without an early exit, so timing does not reveal how much matched.
local function constantTimeEquals(a, b)
    local diff = #a == #b and 0 or 1
    local n = math.max(#a, #b)
    do
        local i = 1
        while i <= n do
            local x = string.byte(a, i) or 0
            local y = string.byte(b, i) or 0
            diff = diff + math.abs(x - y)
            i = i + 1
        end
    end
    return diff == 0
end
local function authorized()
    local token = settings.cfg.control_token
    if token == nil then
        return true
    end
    local header = ngx.var.http_authorization
    if header == nil then
        return false
    end
    local given = string.match(header, "^[Bb]earer%s+(%S+)%s*$")
    if given == nil then
        return false
    end
    return constantTimeEquals(given, token)
end
--- Log-safe text: control characters and quotes are escaped.
local function sanitize(s)
    local out = string.gsub(
        s,
        "[%c\"\\]",
        function(c) return string.format(
            "\\x%02x",
            string.byte(c)
        ) end
    )
    return out
end
local function audit(action, keys, reason, extra)
    ngx.log(
        ngx.NOTICE,
        ((((((("intermission: audit action=" .. action) .. " scope=") .. keys.scope) .. " reason=\"") .. sanitize(reason)) .. "\" client=") .. (ngx.var.remote_addr or "-")) .. extra
    )
end
--- A mode as the answers show it: draining is running (with `draining: true`).
local function shown(mode)
    return mode == "draining" and "running" or mode
end
local function describe(keys)
    local snap = state.snapshot(keys)
    if snap.mode == "outage" then
        outage.ensureProber(keys)
    end
    local count = {}
    for ____, name in ipairs(counters.COUNTER_NAMES) do
        count[name] = counters.read(keys, name)
    end
    return {
        scope = keys.scope,
        applies_to = keys.scope == NODE_SCOPE and "node" or "scope",
        state = shown(snap.mode),
        node_state = keys.scope == NODE_SCOPE and shown(snap.mode) or shown(state.modeOf(keysFor(NODE_SCOPE))),
        draining = snap.mode == "draining",
        outage = snap.mode == "outage" and outage.describe(keys) or nil,
        held = release.heldNow(keys),
        queued = release.queued(keys),
        release = release.progress(keys),
        waiting_ready = ready.waiting(keys),
        last_pause = {
            seconds = num(zones.counters, keys.lastPause),
            queue = num(zones.counters, keys.lastQueue)
        },
        ready_wait_seconds = counters.total(keys, "ready_wait_seconds"),
        in_flight = inflight.total(),
        since = snap.since > 0 and snap.since or nil,
        ["until"] = snap["until"] > 0 and snap["until"] or nil,
        reason = snap.reason ~= "" and snap.reason or nil,
        release_window = settings.cfg.release_window,
        max_hold = settings.cfg.max_hold,
        store = settings.cfg.store,
        counters = count,
        passed_unheld = counters.passedUnheldByScope(),
        shared_dict = {
            state = {
                capacity_kib = zones.state:capacity() / 1024,
                free_kib = zones.state:free_space() / 1024
            },
            queue = {
                capacity_kib = zones.queue:capacity() / 1024,
                free_kib = zones.queue:free_space() / 1024
            }
        }
    }
end
--- In flight to the upstream: this node's, or in fleet mode the whole fleet's (this node
-- counted live, the others by their heartbeats). A node whose heartbeat predates the
-- fleet version `version` (it has not applied the pause yet) counts as at least one.
local function inFlightNow(version)
    if settings.cfg.store ~= "redis" then
        return inflight.total()
    end
    local f = fleet.sync.fleetStatus()
    if f == nil then
        return inflight.total()
    end
    local others = 0
    for ____, n in ipairs(f.nodes) do
        do
            if n.id == fleet.sync.node.id then
                goto __continue20
            end
            local behind = type(n.version) == "number" and n.version < version
            others = others + (behind and math.max(1, n.in_flight) or n.in_flight)
        end
        ::__continue20::
    end
    return inflight.total() + others
end
--- Waits until nothing is in flight to the upstream (see inFlightNow), or `seconds` pass.
local function drain(seconds, version)
    ngx.update_time()
    local deadline = ngx.now() + seconds
    while true do
        local remaining = inFlightNow(version)
        if remaining == 0 then
            return true, 0
        end
        ngx.update_time()
        if ngx.now() >= deadline then
            return false, remaining
        end
        ngx.sleep(0.01)
    end
end
local function tooManyScopes()
    return ("too many scopes: this node keeps at most max_scopes = " .. tostring(settings.cfg.max_scopes)) .. " scopes that are stopped, holding or releasing (idle ones are reclaimed)"
end
--- Whether the scope has state, or a new one fits under max_scopes (sweeping idle scopes at the bound).
local function roomFor(keys)
    if scopeExists(keys) then
        return true
    end
    local max = settings.cfg.max_scopes
    if num(zones.state, SCOPE_COUNT_KEY) < max then
        return true
    end
    sweep()
    return num(zones.state, SCOPE_COUNT_KEY) < max
end
local function mutate(action, keys, p)
    local cfg = settings.cfg
    local reason = p.reason or ""
    local heldBefore = release.heldNow(keys)
    local ttl = action == "pause" and (p.ttl or cfg.pause_ttl) or (action == "maintenance" and (p.ttl or 0) or 0)
    if action ~= "resume" then
        if not roomFor(keys) then
            return jsonError(
                409,
                (action .. " not applied: ") .. tooManyScopes(),
                "scope"
            )
        end
    end
    local version = 0
    if cfg.store == "redis" then
        local mode = action == "pause" and "paused" or (action == "maintenance" and "maintenance" or "")
        local fence = unsettled.forScope(keys.scope)
        local outcome, written, err, id, current = fleet.remote.change(
            keys.scope,
            mode,
            ttl,
            reason,
            fence
        )
        if outcome == "unknown" then
            unsettled.note(keys.scope, id, action)
            ngx.log(
                ngx.ERR,
                (((((("intermission: " .. action) .. " of scope ") .. keys.scope) .. " outcome unknown (change ") .. id) .. "): ") .. tostring(err)
            )
            return json(
                503,
                {
                    error = ((((action .. " outcome unknown: the fleet's Redis did not answer (") .. tostring(err)) .. "); it may still take effect: ") .. (action == "resume" and "resume again" or "resume (a resume is idempotent)")) .. " once Redis answers",
                    applied = "unknown",
                    change = id
                }
            )
        end
        if outcome == "not applied" then
            ngx.log(
                ngx.ERR,
                (((("intermission: " .. action) .. " of scope ") .. keys.scope) .. " not applied: ") .. tostring(err)
            )
            return json(
                503,
                {
                    error = ((action .. " not applied: the fleet's Redis is unavailable (") .. tostring(err)) .. ")",
                    applied = false
                }
            )
        end
        if #fence > 0 then
            unsettled.settled(keys.scope, fence)
        end
        version = written
        if not current then
            audit(
                action,
                keys,
                reason,
                (" ttl=" .. tostring(ttl)) .. " superseded=true"
            )
            local late = describe(keys)
            late.ok = true
            late.applied = true
            late.superseded = true
            late.action = action
            return json(200, late)
        end
    end
    local result
    if action == "pause" then
        result = {state.pause(keys, ttl, reason)}
    elseif action == "maintenance" then
        result = {state.maintenance(keys, ttl, reason)}
    else
        result = {state.resume(keys)}
    end
    local change, err = unpack(result, 1, 2)
    if change == nil and err ~= nil and (string.find(err, "too many scopes", 1, true)) ~= nil then
        return jsonError(409, (action .. " not applied: ") .. err, "scope")
    end
    if action == "resume" and cfg.store == "redis" then
        fleet.sync.refreshShare()
    end
    if change == nil then
        ngx.log(
            ngx.ERR,
            (((("intermission: " .. action) .. " of scope ") .. keys.scope) .. " failed: ") .. tostring(err)
        )
        return jsonError(
            503,
            (action .. " failed: ") .. tostring(err)
        )
    end
    local ttlNote = action == "resume" and " held=" .. tostring(heldBefore) or " ttl=" .. tostring(ttl)
    audit(
        action,
        keys,
        reason,
        (((ttlNote .. " previous=") .. change.previous) .. " already=") .. tostring(change.already)
    )
    local body = describe(keys)
    body.ok = true
    body.applied = true
    body.action = action
    body.previous = change.previous == "draining" and "running" or change.previous
    body.already = change.already
    if action == "resume" then
        body.released = heldBefore
    end
    if change.stateFileError ~= nil then
        body.state_file_error = change.stateFileError
    end
    if action == "pause" and p.drain ~= nil then
        local drained, remaining = drain(p.drain, version)
        body.drained = drained
        body.in_flight = remaining
    end
    return json(200, body)
end
--- The seed's toggle: GET /control pauses when running and resumes when paused.
local function legacy(action, keys)
    local target = action == "enable" and "pause" or "resume"
    if action == "control" then
        target = state.settle(keys) == "paused" and "resume" or "pause"
    end
    return mutate(target, keys, {})
end
local function handle()
    local uri = ngx.var.uri or ""
    local segment = string.match(uri, "([^/]+)/*$")
    local action = segment or ""
    local method = ngx.req.get_method()
    if not authorized() then
        ngx.header["WWW-Authenticate"] = "Bearer realm=\"intermission\""
        return jsonError(401, "missing or wrong token: send Authorization: Bearer <token>")
    end
    local legacyOn = settings.cfg.legacy_endpoints and LEGACY[action] ~= nil
    if READS[action] == nil and MUTATIONS[action] == nil and not legacyOn then
        return jsonError(
            404,
            ("unknown action \"" .. sanitize(action)) .. "\": use status, pause, resume, maintenance or metrics"
        )
    end
    if MUTATIONS[action] ~= nil and method ~= "POST" then
        ngx.header.Allow = "POST"
        return jsonError(405, action .. " changes state: use POST")
    end
    if (READS[action] ~= nil or legacyOn) and method ~= "GET" and method ~= "HEAD" then
        ngx.header.Allow = "GET, HEAD"
        return jsonError(405, action .. " takes GET")
    end
    if LEGACY[action] == nil then
        learnControlPrefix(uri)
    end
    local p, err = params.parse()
    if p == nil then
        return jsonError(400, err.message, err.field)
    end
    if READS[action] == nil and MUTATIONS[action] == nil then
        if p.ttl ~= nil or p.drain ~= nil or p.reason ~= nil then
            return jsonError(400, action .. " takes no parameters but scope")
        end
    elseif action ~= "pause" and p.drain ~= nil then
        return jsonError(400, "drain applies to pause only", "drain")
    elseif (action == "resume" or READS[action] ~= nil) and (p.ttl ~= nil or p.reason ~= nil) then
        return jsonError(400, action .. " takes no ttl or reason", p.ttl ~= nil and "ttl" or "reason")
    end
    local scope = p.scope
    if scope == nil then
        scope = scopeOf()
        if not params.validScope(scope) then
            return jsonError(400, "the location's scope variable is not a valid scope", "scope")
        end
    end
    local keys = keysFor(scope)
    if action == "metrics" then
        ngx.status = 200
        ngx.header["Content-Type"] = "text/plain; version=0.0.4"
        ngx.print(renderMetrics(
            knownScopes(),
            scope
        ))
        return ngx.exit(200)
    end
    if action == "status" then
        state.settle(keys)
        release.advance(keys)
        local body = describe(keys)
        body.ok = true
        if settings.cfg.store == "redis" then
            body.node = fleet.sync.node.id
            local f, err = fleet.sync.fleetStatus()
            body.fleet = f or ({error = err})
            local syncErr = fleet.sync.lastError()
            if syncErr ~= nil then
                body.redis_error = syncErr
            end
        end
        return json(200, body)
    end
    if action == "pause" or action == "resume" or action == "maintenance" then
        return mutate(action, keys, p)
    end
    return legacy(action, keys)
end
function ____exports.control()
    if zones.state == nil then
        return jsonError(503, "intermission is not set up: include nginx/intermission.conf in the http block and call setup() in init_by_lua (see the error log)")
    end
    local r = requestKey()
    if type(lookup(r)) == "number" then
        forget(r)
        inflight.leaveNow()
    end
    local ok, err = pcall(handle)
    if not ok then
        ngx.log(
            ngx.ERR,
            "intermission: control request failed: " .. tostring(err)
        )
        return jsonError(500, "internal error; see the nginx error log")
    end
end
return ____exports
