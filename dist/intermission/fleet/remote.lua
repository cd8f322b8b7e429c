local ____exports = {}
local cjson = require("cjson.safe")
local ____connection = require("intermission.fleet.connection")
local connect = ____connection.connect
local release = ____connection.release
local failed = ____connection.failed
local key = ____connection.key
____exports.CHANNEL_SUFFIX = "events"
local CHANGE = {text = "\nlocal old = redis.call('GET', KEYS[1])\nlocal mode = ARGV[1]\nlocal ttl = tonumber(ARGV[2])\nlocal version = redis.call('INCR', KEYS[3])\nlocal msg\nif mode == '' then\n  redis.call('DEL', KEYS[1])\n  msg = cjson.encode({ version = version })\nelse\n  local now = tonumber(ARGV[6])\n  local since = now\n  if old then\n    local ok, prev = pcall(cjson.decode, old)\n    if ok and type(prev) == 'table' and prev.mode == mode and tonumber(prev.since) then since = prev.since end\n  end\n  local untilTs = 0\n  if ttl > 0 then untilTs = now + ttl end\n  local rec = cjson.encode({ mode = mode, since = since, ['until'] = untilTs, ttl = ttl, reason = ARGV[3] })\n  if ttl > 0 then\n    redis.call('SET', KEYS[1], rec, 'PX', math.max(1, math.floor(ttl * 1000)))\n  else\n    redis.call('SET', KEYS[1], rec)\n  end\n  redis.call('SADD', KEYS[2], ARGV[4])\n  msg = cjson.encode({ mode = mode, since = since, ['until'] = untilTs, ttl = ttl, reason = ARGV[3], version = version })\nend\n-- The message carries the new record, so subscribers need no second round trip.\nredis.call('PUBLISH', ARGV[5], ARGV[4] .. '\\n' .. msg)\nreturn { old or '', version }\n"}
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
--- Writes a change for the whole fleet. Returns whether it was written, the previous
-- record (nil = running), the error, and the fleet's version after the change.
function ____exports.change(scope, mode, ttl, reason)
    local red, err = connect()
    if red == nil then
        return false, nil, err, 0
    end
    local reply, evalErr = run(
        red,
        CHANGE,
        3,
        key("scope", scope),
        key("scopes"),
        key("version"),
        mode,
        ttl,
        reason,
        scope,
        key(____exports.CHANNEL_SUFFIX),
        ngx.now()
    )
    if failed(red, reply) then
        return false, nil, "redis: " .. tostring(evalErr), 0
    end
    release(red)
    local old, version = unpack(reply, 1, 2)
    local previous = ____exports.decode(old)
    return true, previous, nil, version
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
