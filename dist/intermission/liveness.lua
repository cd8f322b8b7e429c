local ____exports = {}
local ____ffi = require("ffi")
local cdef = ____ffi.cdef
local errno = ____ffi.errno
local C = ____ffi.C
local ESRCH = 3
local ALIVE_FOR = 0.25
local GONE_FOR = 60
local CACHE_LIMIT = 64
local declared = false
local available = false
local ____self = 0
local cache = {}
local cached = 0
--- C.kill, or an error if the declaration failed.
local function killFunction()
    return C.kill
end
local function declare()
    if not declared then
        declared = true
        pcall(cdef, "int kill(int pid, int sig);")
        local ok = pcall(killFunction)
        available = ok
        ____self = ngx.worker.pid()
    end
    return available
end
--- Asks the kernel, uncached.
local function probe(pid)
    if C.kill(pid, 0) == 0 then
        return false
    end
    return errno() == ESRCH
end
--- True only when the process `pid` is known to be gone. 0 or less (no pid recorded: a
-- ticket written by an earlier version) is never gone.
function ____exports.gone(pid, now)
    if pid == nil or pid <= 0 or not declare() or pid == ____self then
        return false
    end
    local seen = cache[pid]
    if seen ~= nil and now - seen.at < (seen.gone and GONE_FOR or ALIVE_FOR) then
        return seen.gone
    end
    local isGone = probe(pid)
    if seen == nil then
        if cached >= CACHE_LIMIT then
            for k in pairs(cache) do
                cache[k] = nil
            end
            cached = 0
        end
        cached = cached + 1
    end
    cache[pid] = {gone = isGone, at = now}
    return isGone
end
--- This worker's pid, the holder recorded with its tickets.
function ____exports.me()
    if ____self == 0 then
        ____self = ngx.worker.pid()
    end
    return ____self
end
return ____exports
