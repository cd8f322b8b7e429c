local ____exports = {}
local ____ffi = require("ffi")
local cnew = ____ffi.new
local C = ____ffi.C
local ____shm = require("intermission.shm")
local BUSY_KEY = ____shm.BUSY_KEY
--- ngx_http_lua_ffi_shdict_get's value types (Lua's type numbers).
local LUA_TNUMBER = 3
local LUA_TSTRING = 4
local VALUE_BUF_SIZE = 8
local valueType = cnew("int[1]")
local valueBuf = cnew("unsigned char[?]", VALUE_BUF_SIZE)
local strValue = cnew("unsigned char *[1]")
local strLength = cnew("size_t[1]")
local numValue = cnew("double[1]")
local userFlags = cnew("int[1]")
local isStale = cnew("int[1]")
local errmsg = cnew("char *[1]")
local BUSY_KEY_LENGTH = #BUSY_KEY
local dict
local zonePtr
--- Binds the state zone (setup(), init_worker()); the direct read when it is available.
function ____exports.bindBusy(zone)
    dict = zone
    zonePtr = nil
    local ok, ptr = pcall(function() return C.ngx_http_lua_ffi_shdict_udata_to_zone(rawget(zone, 1)) end)
    local hasGet = pcall(function() return C.ngx_http_lua_ffi_shdict_get end)
    if ok and hasGet and ptr ~= nil then
        zonePtr = ptr
    end
end
--- True when the busy count reads as the number 0: every scope runs.
function ____exports.allRunning()
    local zone = zonePtr
    if zone == nil then
        return (dict:get(BUSY_KEY)) == 0
    end
    strValue[0] = valueBuf
    strLength[0] = VALUE_BUF_SIZE
    if C.ngx_http_lua_ffi_shdict_get(
        zone,
        BUSY_KEY,
        BUSY_KEY_LENGTH,
        valueType,
        strValue,
        strLength,
        numValue,
        userFlags,
        0,
        isStale,
        errmsg
    ) ~= 0 then
        return false
    end
    local t = valueType[0]
    if t == LUA_TNUMBER then
        return numValue[0] == 0
    end
    if t == LUA_TSTRING and strValue[0] ~= valueBuf then
        C.free(strValue[0])
    end
    return false
end
return ____exports
