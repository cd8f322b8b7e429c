local ____exports = {}
local cjson = require("cjson.safe")
local KNOWN = {ttl = true, reason = true, scope = true, drain = true}
____exports.MAX_TTL = 7 * 86400
____exports.MIN_TTL = 0.001
____exports.MAX_DRAIN = 600
____exports.MAX_REASON = 500
local MAX_BODY = 16384
--- Plain decimal seconds: "30", "2.5". No sign, hex, exponent or whitespace. A JSON number
-- is held to the same: -0 is refused as "-0" is in a query.
local function parseSeconds(field, raw, max)
    local n
    if type(raw) == "number" then
        n = raw
        if n == 0 and 1 / n < 0 then
            n = nil
        end
    elseif type(raw) == "string" and (string.match(raw, "^%d+%.?%d*$")) ~= nil and #raw <= 12 then
        n = tonumber(raw)
    end
    if n == nil or n ~= n or n < 0 or n > max then
        return nil, {
            field = field,
            message = (field .. " must be a number of seconds from 0 to ") .. tostring(max)
        }
    end
    return n, nil
end
--- Scope names: 1-64 of letters, digits, "." "_" ":" "-".
function ____exports.validScope(scope)
    return type(scope) == "string" and #scope <= 64 and (string.match(scope, "^[%w%._:%-]+$")) ~= nil
end
--- cjson with hexadecimal numbers, Infinity and NaN refused (its default accepts them), made once per worker.
local json = {}
local function strictJson()
    if json.strict == nil then
        json.strict = cjson.new()
        json.strict.decode_invalid_numbers(false)
    end
    return json.strict
end
--- The first member name that a JSON object's top level repeats, if any (cjson keeps the
-- last silently). `text` is known to decode to an object; names are compared decoded,
-- so "ttl" and "t\u0074l" are the same name.
local function repeatedKey(text)
    local names = {}
    local n = #text
    local depth = 0
    local expectName = false
    local i = 1
    while i <= n do
        do
            local c = string.sub(text, i, i)
            if c == "\"" then
                local j = i + 1
                while j <= n do
                    local d = string.sub(text, j, j)
                    if d == "\\" then
                        j = j + 2
                    elseif d == "\"" then
                        break
                    else
                        j = j + 1
                    end
                end
                if depth == 1 and expectName then
                    local name = strictJson().decode(string.sub(text, i, j))
                    if type(name) == "string" then
                        if names[name] ~= nil then
                            return name
                        end
                        names[name] = true
                    end
                    expectName = false
                end
                i = j + 1
                goto __continue11
            end
            if c == "{" or c == "[" then
                depth = depth + 1
                if depth == 1 then
                    expectName = c == "{"
                end
            elseif c == "}" or c == "]" then
                depth = depth - 1
            elseif c == "," and depth == 1 then
                expectName = true
            end
            i = i + 1
        end
        ::__continue11::
    end
    return nil
end
local function readBody()
    local method = ngx.req.get_method()
    if method ~= "POST" and method ~= "PUT" then
        return {}, nil
    end
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if body == nil then
        if ngx.req.get_body_file() ~= nil then
            return nil, {message = "request body too large"}
        end
        return {}, nil
    end
    if #body > MAX_BODY then
        return nil, {message = "request body too large"}
    end
    local contentType = ngx.var.content_type or ""
    if (string.find(contentType, "application/json", 1, true)) ~= nil then
        local decoded, err = strictJson().decode(body)
        if decoded == nil or type(decoded) ~= "table" then
            return nil, {field = "body", message = "malformed JSON body" .. (err ~= nil and ": " .. err or "")}
        end
        for k in pairs(decoded) do
            if type(k) ~= "string" then
                return nil, {field = "body", message = "the JSON body must be an object"}
            end
        end
        local repeated = repeatedKey(body)
        if repeated ~= nil then
            return nil, {field = repeated, message = repeated .. " is given more than once"}
        end
        return decoded, nil
    end
    local args, err = ngx.req.get_post_args(32)
    if args == nil then
        return nil, {
            field = "body",
            message = "malformed form body: " .. tostring(err)
        }
    end
    if err == "truncated" then
        return nil, {message = "too many parameters"}
    end
    return args, nil
end
function ____exports.parse()
    local query, queryErr = ngx.req.get_uri_args(32)
    if queryErr == "truncated" then
        return nil, {message = "too many parameters"}
    end
    local body, bodyErr = readBody()
    if body == nil then
        return nil, bodyErr
    end
    local merged = {}
    for ____, source in ipairs({query, body}) do
        for k, v in pairs(source) do
            local name = k
            if KNOWN[name] == nil then
                return nil, {field = name, message = ("unknown parameter \"" .. name) .. "\""}
            end
            if merged[name] ~= nil or type(v) == "table" then
                return nil, {field = name, message = name .. " is given more than once"}
            end
            if v == true or v == cjson.null then
                return nil, {field = name, message = name .. " needs a value"}
            end
            merged[name] = v
        end
    end
    local out = {}
    if merged.ttl ~= nil then
        local ttl, err = parseSeconds("ttl", merged.ttl, ____exports.MAX_TTL)
        if err ~= nil then
            return nil, err
        end
        if ttl > 0 and ttl < ____exports.MIN_TTL then
            return nil, {
                field = "ttl",
                message = ((("ttl must be 0 (no expiry) or from " .. tostring(____exports.MIN_TTL)) .. " to ") .. tostring(____exports.MAX_TTL)) .. " seconds"
            }
        end
        out.ttl = ttl
    end
    if merged.drain ~= nil then
        local drain, err = parseSeconds("drain", merged.drain, ____exports.MAX_DRAIN)
        if err ~= nil then
            return nil, err
        end
        out.drain = drain
    end
    if merged.reason ~= nil then
        if type(merged.reason) ~= "string" or #merged.reason > ____exports.MAX_REASON then
            return nil, {
                field = "reason",
                message = ("reason must be text of at most " .. tostring(____exports.MAX_REASON)) .. " bytes"
            }
        end
        out.reason = merged.reason
    end
    if merged.scope ~= nil then
        if not ____exports.validScope(merged.scope) then
            return nil, {field = "scope", message = "scope must be 1-64 letters, digits, '.', '_', ':' or '-'"}
        end
        out.scope = merged.scope
    end
    return out, nil
end
return ____exports
