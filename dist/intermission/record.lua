local ____exports = {}
local ____resty_2Ecore_2Ebase = require("resty.core.base")
local get_request = ____resty_2Ecore_2Ebase.get_request
local ____ffi = require("ffi")
local cast = ____ffi.cast
local ctype = ____ffi.typeof
local cnew = ____ffi.new
local C = ____ffi.C
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
--- Buckets of WAYS slots, each looked at in straight-line code: a loop here would make
-- LuaJIT abort the hooks' traces ("inner loop in root trace") and run them interpreted.
-- 1024 x 4 x 16 bytes = 64 KB per worker; a full bucket sends a request to the Lua map.
local BUCKETS = 1024
local WAYS = 4
local FREE = 0
local slots = cnew(
    ctype("struct { double req; double start; }[?]"),
    BUCKETS * WAYS
)
--- The request's bucket's first slot. Request structs sit at the start of their 4 KB
-- pools, so their addresses differ in the higher bits: /16 keeps those, and pools
-- 4 KB + 16 apart (257 units, odd) step through every bucket. Bits 4 to 13 of the
-- address, taken with bit operations (LuaJIT's bit library, on the low 32 bits): the
-- same bucket as floor(key / 16) % BUCKETS, without two floating-point floors.
local function bucket(key)
    return bit.band(
        bit.rshift(key, 4),
        BUCKETS - 1
    ) * WAYS
end
--- The slot holding `key`, or -1.
local function findSlot(key)
    local b = bucket(key)
    if slots[b].req == key then
        return b
    end
    if slots[b + 1].req == key then
        return b + 1
    end
    if slots[b + 2].req == key then
        return b + 2
    end
    if slots[b + 3].req == key then
        return b + 3
    end
    return -1
end
--- Puts `key` in a free slot of its bucket; false: the bucket is full.
local function putSlot(key, start)
    local b = bucket(key)
    local i = -1
    if slots[b].req == FREE then
        i = b
    elseif slots[b + 1].req == FREE then
        i = b + 1
    elseif slots[b + 2].req == FREE then
        i = b + 2
    elseif slots[b + 3].req == FREE then
        i = b + 3
    else
        return false
    end
    slots[i].req = key
    slots[i].start = start
    return true
end
local function forgetSlot(i)
    slots[i].req = FREE
end
local live = {}
--- Entries in `live`; 0 while every scope runs and nothing overflowed.
local mapped = 0
local function mapSet(key, value)
    if live[key] == nil then
        mapped = mapped + 1
    end
    live[key] = value
end
local function mapDelete(key)
    if live[key] ~= nil then
        live[key] = nil
        mapped = mapped - 1
    end
end
--- Hot path: records a forwarded request unless this request is known. False: known.
function ____exports.recordIfNew(key, start)
    if findSlot(key) >= 0 or mapped > 0 and live[key] ~= nil then
        return false
    end
    if not putSlot(key, start) then
        mapSet(key, start)
    end
    return true
end
--- log() on the hot path: true when the request was a forwarded one, now forgotten.
function ____exports.forgetForwarded(key)
    local i = findSlot(key)
    if i < 0 then
        return false
    end
    forgetSlot(i)
    return true
end
--- Whether any request has a Record (or an overflowed start) in the map.
function ____exports.anyMapped()
    return mapped > 0
end
--- What access() recorded: a forwarded request's start time, a Record, or nothing.
function ____exports.lookup(key)
    local i = findSlot(key)
    if i >= 0 then
        return slots[i].start
    end
    local ____temp_0
    if mapped > 0 then
        ____temp_0 = live[key]
    else
        ____temp_0 = nil
    end
    return ____temp_0
end
--- A request forwarded by the slow path.
function ____exports.rememberForwarded(key, start)
    if not putSlot(key, start) then
        mapSet(key, start)
    end
end
function ____exports.remember(key, rec)
    local i = findSlot(key)
    if i >= 0 then
        forgetSlot(i)
    end
    mapSet(key, rec)
end
function ____exports.forget(key)
    local i = findSlot(key)
    if i >= 0 then
        forgetSlot(i)
    else
        mapDelete(key)
    end
end
return ____exports
