local ____exports = {}
--- Seconds between two lines of one kind in one worker.
local QUIET = 10
local bursts = {}
--- Logs `message` at `level` unless a line of this `kind` went out less than QUIET seconds
-- ago in this worker; then it only counts it. Returns whether it logged.
function ____exports.logOnce(level, kind, message)
    local now = ngx.now()
    local b = bursts[kind]
    if b == nil then
        b = {["until"] = 0, left = 0}
        bursts[kind] = b
    end
    if now < b["until"] then
        b.left = b.left + 1
        return false
    end
    local note = b.left > 0 and (" (and " .. tostring(b.left)) .. " more like it in this worker since the last such line)" or ""
    ngx.log(level, message .. note)
    b.left = 0
    b["until"] = now + QUIET
    return true
end
return ____exports
