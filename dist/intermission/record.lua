local ____exports = {}
local ____resty_2Ecore_2Ebase = require("resty.core.base")
local get_request = ____resty_2Ecore_2Ebase.get_request
local ____ffi = require("ffi")
local cast = ____ffi.cast
____exports.live = {}
--- The request pointer as a number (user-space addresses fit a double exactly).
function ____exports.requestKey()
    return tonumber(cast(
        "uintptr_t",
        get_request()
    ))
end
____exports.startTime = ngx.req.start_time
return ____exports
