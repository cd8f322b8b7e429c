local ____exports = {}
local cjson = require("cjson.safe")
local ____connection = require("intermission.fleet.connection")
local connect = ____connection.connect
local release = ____connection.release
local failed = ____connection.failed
local key = ____connection.key
local CHANGE = "\nlocal old = redis.call('GET', KEYS[1])\nlocal mode = ARGV[1]\nlocal rec = ''\nif mode == '' then\n  redis.call('DEL', KEYS[1])\nelse\n  local since = tonumber(ARGV[2])\n  if old then\n    local prev = cjson.decode(old)\n    if prev.mode == mode then since = prev.since end\n  end\n  local ttl = tonumber(ARGV[3])\n  local untilTs = 0\n  if ttl > 0 then untilTs = tonumber(ARGV[2]) + ttl end\n  rec = cjson.encode({ mode = mode, since = since, ['until'] = untilTs, reason = ARGV[4] })\n  if ttl > 0 then\n    redis.call('SET', KEYS[1], rec, 'PX', math.floor(ttl * 1000))\n  else\n    redis.call('SET', KEYS[1], rec)\n  end\n  redis.call('SADD', KEYS[2], ARGV[5])\nend\n-- The message carries the new record, so subscribers need no second round trip.\nredis.call('PUBLISH', ARGV[6], ARGV[5] .. '\\n' .. rec)\nreturn old or ''\n"
____exports.CHANNEL_SUFFIX = "events"
function ____exports.decode(text)
    if type(text) ~= "string" or text == "" then
        return nil
    end
    local rec = cjson.decode(text)
    if type(rec) ~= "table" then
        return nil
    end
    local r = rec
    if r.mode ~= "paused" and r.mode ~= "maintenance" then
        return nil
    end
    return r
end
--- Writes a change for the whole fleet. Returns the previous record (nil = running).
function ____exports.change(scope, mode, ttl, reason)
    local red, err = connect()
    if red == nil then
        return false, nil, err
    end
    local old, evalErr = red:eval(
        CHANGE,
        2,
        key("scope", scope),
        key("scopes"),
        mode,
        ngx.now(),
        ttl,
        reason,
        scope,
        key(____exports.CHANNEL_SUFFIX)
    )
    if failed(red, old) then
        return false, nil, "redis: " .. tostring(evalErr)
    end
    release(red)
    return true, ____exports.decode(old), nil
end
--- Every scope's record (running scopes are absent).
function ____exports.readAll()
    local red, err = connect()
    if red == nil then
        return nil, err
    end
    local names, e1 = red:eval(
        "\nlocal names = redis.call('SMEMBERS', KEYS[1])\nlocal out = {}\nfor i, n in ipairs(names) do\n  out[#out + 1] = n\n  out[#out + 1] = redis.call('GET', ARGV[1] .. n) or ''\nend\nreturn out",
        1,
        key("scopes"),
        key("scope") .. ":"
    )
    if failed(red, names) then
        return nil, "redis: " .. tostring(e1)
    end
    release(red)
    local out = {}
    local list = names
    do
        local i = 0
        while i < #list do
            out[list[i + 1]] = ____exports.decode(list[i + 1 + 1]) or false
            i = i + 2
        end
    end
    return out, nil
end
return ____exports
