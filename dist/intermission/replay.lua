local ____exports = {}
local ngxVar = ngx.var
--- Bytes every nginx escapes in a URI it sends upstream (NGX_ESCAPE_URI).
local ESCAPED = ((((((("[%z" .. string.char(1)) .. "-") .. string.char(32)) .. "#%%?") .. string.char(127)) .. "-") .. string.char(255)) .. "]"
--- Printable bytes whose escaping differs between nginx versions (1.22 escapes all of
-- these; others less): a URI holding one is not predictable, so not replayed unless a
-- rewrite made the first try escaped as well.
local UNSURE = "[\"<>\\^`{|}%[%]]"
--- $uri as proxy_pass escapes it after an internal redirect; undefined: not predictable.
function ____exports.escapeUri(uri)
    if (string.find(uri, UNSURE)) ~= nil then
        return nil
    end
    return (string.gsub(
        uri,
        ESCAPED,
        function(c) return string.format(
            "%%%02X",
            string.byte(c)
        ) end
    ))
end
--- %XX decoded once, as ngx.exec does.
function ____exports.unescapeOnce(path)
    return (string.gsub(
        path,
        "%%(%x%x)",
        function(hex) return string.char(tonumber(hex, 16)) end
    ))
end
--- A decoded path that nginx's own parser would have normalised, or that ngx.exec refuses.
local function notReplayablePath(path)
    if (string.find(path, "[%z#]")) ~= nil then
        return "its path holds a NUL or #"
    end
    if (string.find(path, "//", 1, true)) ~= nil then
        return "its path holds //"
    end
    if (string.find(path, "/%.%.?/")) ~= nil or (string.find(path, "/%.%.?$")) ~= nil then
        return "its path holds a dot segment"
    end
    return nil
end
--- The request body, when it has one, is held whole by nginx (in memory or in its temp
-- file), so proxy_pass can send it again: undefined, or why not.
function ____exports.bodyNotReplayable()
    local chunked = ngxVar.http_transfer_encoding ~= nil
    local length = tonumber(ngxVar.content_length or "")
    if length == nil then
        return chunked and "its chunked body was streamed (proxy_request_buffering off)" or nil
    end
    if length == 0 then
        return nil
    end
    local data = ngx.req.get_body_data()
    if data ~= nil then
        local ____temp_0
        if #data == length then
            ____temp_0 = nil
        else
            ____temp_0 = ((("only " .. tostring(#data)) .. " of its ") .. tostring(length)) .. " body bytes are held (proxy_request_buffering off)"
        end
        return ____temp_0
    end
    if ngx.req.get_body_file() ~= nil then
        return nil
    end
    return ("its " .. tostring(length)) .. "-byte body was streamed (proxy_request_buffering off)"
end
--- Where to send a failed request again so that it is the same request: the client's own
-- path and query string (for ngx.exec), or why it cannot be; and whether `uri` and `args`
-- ($uri and $args where access() first held it) are the client's own, undecoded aside.
function ____exports.target(uri, args)
    local raw = ngxVar.request_uri or ""
    if string.sub(raw, 1, 1) ~= "/" then
        return nil, nil, "its request URI is not a path", false
    end
    local q = string.find(raw, "?", 1, true)
    local rawPath = q == nil and raw or string.sub(raw, 1, q - 1)
    local rawArgs = q == nil and "" or string.sub(raw, q + 1)
    local path = ____exports.unescapeOnce(rawPath)
    local bad = notReplayablePath(path)
    if bad ~= nil then
        return nil, nil, bad, false
    end
    local asSent = uri == path and args == rawArgs
    if asSent then
        local escaped = ____exports.escapeUri(uri)
        if escaped == nil or (args == "" and escaped or (escaped .. "?") .. args) ~= raw then
            return nil, nil, "proxy_pass could not send its URI's bytes again as the client sent them", asSent
        end
    end
    local bodyWhy = ____exports.bodyNotReplayable()
    if bodyWhy ~= nil then
        return nil, nil, bodyWhy, asSent
    end
    local ____temp_1
    if rawArgs == "" then
        ____temp_1 = nil
    else
        ____temp_1 = rawArgs
    end
    return rawPath, ____temp_1, nil, asSent
end
return ____exports
