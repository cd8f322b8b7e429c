local ____exports = {}
local cjson = require("cjson.safe")
if cjson.encode_escape_forward_slash ~= nil then
    cjson.encode_escape_forward_slash(false)
end
function ____exports.encode(value)
    local text, err = cjson.encode(value)
    if text == nil then
        ngx.log(
            ngx.ERR,
            "intermission: cannot encode JSON: " .. tostring(err)
        )
        return "{\"error\":\"internal: cannot encode the answer\"}"
    end
    return text
end
--- Sends a JSON body with `status` and ends the request.
function ____exports.json(status, body)
    ngx.status = status
    ngx.header["Content-Type"] = "application/json"
    ngx.header["Cache-Control"] = "no-store"
    ngx.print(
        ____exports.encode(body),
        "\n"
    )
    return ngx.exit(status)
end
function ____exports.jsonError(status, message, field)
    return ____exports.json(status, field == nil and ({error = message}) or ({error = message, field = field}))
end
local function wantsJson()
    local accept = ngx.var.http_accept
    if accept == nil then
        return false
    end
    local found = string.find(accept, "application/json", 1, true)
    return found ~= nil
end
local PAGE_TITLE = {maintenance = "Down for maintenance", timeout = "Please try again", full = "Please try again"}
--- 503 + Retry-After for a request intermission will not forward.
function ____exports.unavailable(why, retryAfter, reason)
    ngx.status = 503
    ngx.header["Retry-After"] = retryAfter
    ngx.header["Cache-Control"] = "no-store"
    if wantsJson() then
        ngx.header["Content-Type"] = "application/json"
        ngx.print(
            ____exports.encode({error = "service unavailable", cause = why, reason = reason, retry_after = retryAfter}),
            "\n"
        )
    else
        ngx.header["Content-Type"] = "text/html; charset=utf-8"
        local title = PAGE_TITLE[why]
        ngx.print((("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>" .. title) .. "</title></head>") .. ((("<body><h1>" .. title) .. "</h1><p>We will be back in a moment. Please retry in ") .. tostring(retryAfter)) .. " seconds.</p></body></html>\n")
    end
    return ngx.exit(503)
end
return ____exports
