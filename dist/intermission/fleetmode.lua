local ____exports = {}
____exports.fleet = {}
--- Loads the fleet modules, or says which library is missing and where to get it.
function ____exports.loadFleet()
    local ok, sync = pcall(require, "intermission.fleet.sync")
    if not ok then
        local err = tostring(sync)
        local missing = string.match(err, "module '([^']+)' not found")
        if missing == "resty.redis" then
            return false, "store = \"redis\" needs lua-resty-redis as \"resty.redis\" (OpenResty ships it; on Debian install lua-nginx-redis and link it as resty/redis.lua, see the README): " .. err
        end
        return false, "cannot load fleet mode: " .. err
    end
    ____exports.fleet.sync = sync
    ____exports.fleet.remote = require("intermission.fleet.remote")
    return true, nil
end
return ____exports
