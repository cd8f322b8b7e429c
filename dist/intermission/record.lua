local ____exports = {}
local ____resty_2Ecore_2Ebase = require("resty.core.base")
local get_request = ____resty_2Ecore_2Ebase.get_request
local ____ffi = require("ffi")
local cast = ____ffi.cast
local ctype = ____ffi.typeof
local C = ____ffi.C
____exports.live = {}
local uintptr = ctype("uintptr_t")
--- The request pointer as a number (user-space addresses fit a double exactly).
function ____exports.requestKey()
    return tonumber(cast(
        uintptr,
        get_request()
    ))
end
--- The same, with the request's start time (the stale-record check), for the hot path.
function ____exports.requestKeyAndStart()
    local r = get_request()
    return tonumber(cast(uintptr, r)), C.ngx_http_lua_ffi_req_start_time(r)
end
____exports.startTime = ngx.req.start_time
return ____exports
