local ____exports = {}
local ____shm = require("intermission.shm")
local zones = ____shm.zones
local LOCK_KEY = ____shm.LOCK_KEY
local EXPIRE = 5
local serial = 0
--- Returns a token to pass to unlock(), or (nil, err) on timeout.
function ____exports.lock(timeout)
    if timeout == nil then
        timeout = 2
    end
    serial = serial + 1
    local token = (tostring(ngx.worker.pid()) .. ":") .. tostring(serial)
    local waited = 0
    local step = 0.001
    while true do
        local ok, err = zones.state:safe_add(LOCK_KEY, token, EXPIRE)
        if ok then
            return token, nil
        end
        if err ~= "exists" then
            return nil, "lock: " .. tostring(err)
        end
        if waited >= timeout then
            return nil, "lock: timeout"
        end
        ngx.sleep(step)
        waited = waited + step
        step = math.min(step * 2, 0.05)
    end
end
function ____exports.unlock(token)
    local holder = zones.state:get(LOCK_KEY)
    if holder == token then
        zones.state:delete(LOCK_KEY)
    end
end
return ____exports
