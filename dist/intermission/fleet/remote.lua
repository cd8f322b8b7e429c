local ____exports = {}
local cjson = require("cjson.safe")
local ____connection = require("intermission.fleet.connection")
local connect = ____connection.connect
local release = ____connection.release
local failed = ____connection.failed
local key = ____connection.key
local ____settings = require("intermission.settings")
local settings = ____settings.settings
____exports.CHANNEL_SUFFIX = "events"
local CHANGE = {text = "\nfor i = 5, #KEYS do\n  if not redis.call('GET', KEYS[i]) then redis.call('SET', KEYS[i], 'cancelled', 'EX', ARGV[7]) end\nend\nif redis.call('GET', KEYS[4]) then return { 'cancelled' } end\nlocal old = redis.call('GET', KEYS[1])\nlocal mode = ARGV[1]\nlocal ttl = tonumber(ARGV[2])\nlocal version = redis.call('INCR', KEYS[3])\nlocal msg\nif mode == '' then\n  redis.call('DEL', KEYS[1])\n  msg = cjson.encode({ version = version })\nelse\n  local now = tonumber(ARGV[6])\n  local since = now\n  if old then\n    local ok, prev = pcall(cjson.decode, old)\n    if ok and type(prev) == 'table' and prev.mode == mode and tonumber(prev.since) then since = prev.since end\n  end\n  local untilTs = 0\n  if ttl > 0 then untilTs = now + ttl end\n  local rec = cjson.encode({ mode = mode, since = since, ['until'] = untilTs, ttl = ttl, reason = ARGV[3] })\n  if ttl > 0 then\n    redis.call('SET', KEYS[1], rec, 'PX', math.max(1, math.floor(ttl * 1000)))\n  else\n    redis.call('SET', KEYS[1], rec)\n  end\n  redis.call('SADD', KEYS[2], ARGV[4])\n  msg = cjson.encode({ mode = mode, since = since, ['until'] = untilTs, ttl = ttl, reason = ARGV[3], version = version })\nend\n-- The message carries the new record, so subscribers need no second round trip.\nredis.call('PUBLISH', ARGV[5], ARGV[4] .. '\\n' .. msg)\nredis.call('SET', KEYS[4], version, 'EX', ARGV[7])\nreturn { old or '', version }\n"}
local SETTLE = {text = "\nlocal now = redis.call('GET', KEYS[2]) or '0'\nlocal st = redis.call('GET', KEYS[1])\nif st then return { st, now } end\nredis.call('SET', KEYS[1], 'cancelled', 'EX', ARGV[1])\nreturn { 'cancelled', now }\n"}
local READ_ALL = {text = "\nlocal out = { redis.call('GET', KEYS[2]) or '0' }\nfor _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n  local k = ARGV[1] .. n\n  local v = redis.call('GET', k)\n  if v then\n    out[#out + 1] = n\n    out[#out + 1] = v\n    out[#out + 1] = redis.call('PTTL', k)\n  end\nend\nreturn out\n"}
local LIVE_NODES = {text = "\nlocal n = 0\nfor _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n  n = n + redis.call('EXISTS', ARGV[1] .. id)\nend\nreturn n\n"}
local function toHex(bytes)
    local hex = string.gsub(
        bytes,
        ".",
        function(c) return string.format(
            "%02x",
            string.byte(c)
        ) end
    )
    return hex
end
--- EVALSHA, and EVAL (which also loads the script) when Redis does not know it.
local function run(red, script, numKeys, ...)
    if script.sha == nil then
        script.sha = toHex(ngx.sha1_bin(script.text))
    end
    local reply, err = red:evalsha(script.sha, numKeys, ...)
    if reply == false and err ~= nil and (string.find(err, "NOSCRIPT", 1, true)) ~= nil then
        return red:eval(script.text, numKeys, ...)
    end
    return reply, err
end
--- A record as stored or published, or undefined for running (or unreadable).
function ____exports.decode(text)
    if type(text) ~= "string" or text == "" then
        return nil, nil
    end
    local rec = cjson.decode(text)
    if type(rec) ~= "table" then
        return nil, nil
    end
    local r = rec
    local version = type(r.version) == "number" and r.version or nil
    if r.mode ~= "paused" and r.mode ~= "maintenance" then
        return nil, version
    end
    local ttl
    if type(r.ttl) == "number" then
        ttl = r.ttl
    else
        local ____until = type(r["until"]) == "number" and r["until"] or 0
        ttl = ____until > 0 and math.max(
            0.001,
            ____until - ngx.now()
        ) or 0
    end
    return {
        mode = r.mode,
        ttl = ttl,
        reason = type(r.reason) == "string" and r.reason or "",
        since = type(r.since) == "number" and r.since or nil,
        ["until"] = type(r["until"]) == "number" and r["until"] or nil
    }, version
end
--- How long Redis keeps a change's fate (seconds). A command that was sent runs within
-- moments of Redis reading it; one still in flight is retried by TCP for about 15 minutes
-- at most (Linux's tcp_retries2), so a change fenced by settle() cannot run after its
-- fence has gone.
____exports.CHANGE_ID_TTL = 3600
--- After a change got no answer, how long the node keeps asking Redis what became of it.
____exports.SETTLE_WITHIN = 5
--- This worker's change ids: 64 random bits once, the pid, and a serial.
local ids = {seed = "", serial = 0}
local function newChangeId()
    if ids.seed == "" then
        local f = io.open("/dev/urandom", "rb")
        if f ~= nil then
            local bytes = f:read(8)
            f:close()
            if type(bytes) == "string" then
                ids.seed = toHex(bytes)
            end
        end
        if ids.seed == "" then
            ids.seed = string.format(
                "%x",
                math.floor(ngx.now() * 1000)
            )
        end
    end
    ids.serial = ids.serial + 1
    return (((ids.seed .. ".") .. tostring(ngx.worker.pid())) .. ".") .. tostring(ids.serial)
end
--- A change that got no answer (a read timeout, a connection lost after the send) may have
-- run, may run later (it can sit in Redis's socket buffer while Redis is busy; closing our
-- end does not take back what Redis already received), or may never run. This asks Redis,
-- on fresh connections and for at most SETTLE_WITHIN seconds, to settle it: SETTLE and the
-- change are scripts, each run wholly before or after the other, so either the change ran
-- first (SETTLE reads its version: "applied") or SETTLE fenced its id first and the change,
-- whenever it arrives, changes nothing ("not applied"). Which connection Redis reads first
-- does not matter. No answer at all: "unknown".
local function settle(id, why)
    local cfg = settings.cfg.redis
    ngx.update_time()
    local deadline = ngx.now() + ____exports.SETTLE_WITHIN
    local last = why
    while true do
        local red, err = connect()
        if red == nil then
            last = err
        else
            local left = math.max(
                0.001,
                math.min(
                    cfg.read_timeout,
                    deadline - ngx.now()
                )
            )
            red:set_timeout(math.ceil(left * 1000))
            local reply, e = run(
                red,
                SETTLE,
                2,
                key("change", id),
                key("version"),
                ____exports.CHANGE_ID_TTL
            )
            if not failed(red, reply) then
                release(red)
                local fate, now = unpack(reply, 1, 2)
                if fate == "cancelled" then
                    return "not applied", 0, why .. "; fenced afterwards, so it never runs", id, false
                end
                local version = tonumber(fate) or 0
                return "applied", version, nil, id, version == tonumber(now)
            end
            last = "redis: " .. tostring(e)
        end
        ngx.update_time()
        if ngx.now() >= deadline then
            return "unknown", 0, ((((why .. "; then no answer from Redis within ") .. tostring(____exports.SETTLE_WITHIN)) .. "s (") .. last) .. ")", id, false
        end
        ngx.sleep(0.1)
    end
end
--- One attempt (read_timeout) to settle a change of unknown outcome: "applied", "not
-- applied" (fenced now or before), or undefined with the error when Redis did not answer.
function ____exports.settleOnce(id)
    local red, err = connect()
    if red == nil then
        return nil, err
    end
    local reply, e = run(
        red,
        SETTLE,
        2,
        key("change", id),
        key("version"),
        ____exports.CHANGE_ID_TTL
    )
    if failed(red, reply) then
        return nil, "redis: " .. tostring(e)
    end
    release(red)
    local fate = unpack(reply, 1, 1)
    return fate == "cancelled" and "not applied" or "applied", nil
end
--- Writes a change for the whole fleet, under a fresh change id. `fence`: ids of this
-- node's earlier changes whose outcome was unknown; the script fences those that have
-- not run, so none can land after this one. Returns the outcome, the fleet's version
-- after the change (when applied), why it was not applied (or is unknown), the id, and
-- whether the change is still the fleet's latest (false when a settle found it replaced
-- by a later one: the node must not apply it locally over what the fleet says now).
function ____exports.change(scope, mode, ttl, reason, fence)
    if fence == nil then
        fence = {}
    end
    local id = newChangeId()
    local red, err = connect()
    if red == nil then
        return "not applied", 0, err, id, false
    end
    local args = {
        key("scope", scope),
        key("scopes"),
        key("version"),
        key("change", id)
    }
    for ____, f in ipairs(fence) do
        args[#args + 1] = key("change", f)
    end
    local numKeys = #args
    for ____, a in ipairs({
        mode,
        ttl,
        reason,
        scope,
        key(____exports.CHANNEL_SUFFIX),
        ngx.now(),
        ____exports.CHANGE_ID_TTL
    }) do
        args[#args + 1] = a
    end
    local reply, evalErr = run(
        red,
        CHANGE,
        numKeys,
        unpack(args)
    )
    if reply == nil then
        red:close()
        return settle(
            id,
            "redis: " .. tostring(evalErr)
        )
    end
    if failed(red, reply) then
        return "not applied", 0, "redis: " .. tostring(evalErr), id, false
    end
    release(red)
    local first, version = unpack(reply, 1, 2)
    if first == "cancelled" and version == nil then
        return "not applied", 0, "fenced before it ran", id, false
    end
    return "applied", version or 0, nil, id, true
end
--- Every scope that is not running, with its remaining TTL from Redis, and the fleet's version.
function ____exports.readAll()
    local red, err = connect()
    if red == nil then
        return nil, 0, err
    end
    local reply, e1 = run(
        red,
        READ_ALL,
        2,
        key("scopes"),
        key("version"),
        key("scope") .. ":"
    )
    if failed(red, reply) then
        return nil, 0, "redis: " .. tostring(e1)
    end
    release(red)
    local list = reply
    local out = {}
    do
        local i = 1
        while i < #list do
            local rec = ____exports.decode(list[i + 1 + 1])
            local pttl = list[i + 2 + 1]
            if rec ~= nil and pttl ~= -2 then
                rec.ttl = pttl >= 0 and math.max(0.001, pttl / 1000) or 0
                out[list[i + 1]] = rec
            end
            i = i + 3
        end
    end
    return out, tonumber(list[1]) or 0, nil
end
--- How many nodes have a live heartbeat: one round trip and one number back, whatever the
-- fleet's size (fleetStatus reads and decodes every heartbeat).
function ____exports.liveNodes()
    local red, err = connect()
    if red == nil then
        return nil, err
    end
    local reply, e1 = run(
        red,
        LIVE_NODES,
        1,
        key("nodes"),
        key("node") .. ":"
    )
    if failed(red, reply) then
        return nil, "redis: " .. tostring(e1)
    end
    release(red)
    return reply, nil
end
return ____exports
