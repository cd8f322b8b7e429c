local ____exports = {}
local redis = require("resty.redis")
local ____settings = require("intermission.settings")
local settings = ____settings.settings
local connectorModule
--- Through Redis Sentinel: the connector asks the sentinels for the current master.
local function connectViaSentinel()
    local cfg = settings.cfg.redis
    if connectorModule == nil then
        local ok, mod = pcall(require, "resty.redis.connector")
        if not ok then
            return nil, "redis sentinels need lua-resty-redis-connector (resty.redis.connector)"
        end
        connectorModule = mod
    end
    local rc, err = connectorModule.new({connect_timeout = cfg.connect_timeout * 1000, read_timeout = cfg.read_timeout * 1000, keepalive_timeout = cfg.keepalive_timeout * 1000, keepalive_poolsize = cfg.pool_size})
    if rc == nil then
        return nil, "redis connector: " .. tostring(err)
    end
    local red, connErr = rc:connect({
        sentinels = cfg.sentinels,
        master_name = cfg.master_name,
        role = "master",
        db = cfg.database,
        password = cfg.password or ""
    })
    if red == nil then
        return nil, (("redis via sentinel (master " .. cfg.master_name) .. "): ") .. (connErr or "no master known")
    end
    red:set_timeout(cfg.read_timeout * 1000)
    return red, nil
end
--- A ready connection, or (nil, err).
function ____exports.connect()
    local cfg = settings.cfg.redis
    if cfg.sentinels ~= nil then
        return connectViaSentinel()
    end
    local red, newErr = redis.new()
    if red == nil then
        return nil, "redis: " .. tostring(newErr)
    end
    red:set_timeout(cfg.connect_timeout * 1000)
    local ok, err = red:connect(cfg.host, cfg.port, {pool_size = cfg.pool_size})
    if ok == nil then
        return nil, (((("redis " .. cfg.host) .. ":") .. tostring(cfg.port)) .. ": ") .. tostring(err)
    end
    red:set_timeout(cfg.read_timeout * 1000)
    local reused = red:get_reused_times()
    if reused == 0 then
        if cfg.password ~= nil then
            local authed, authErr = unpack(
                cfg.username ~= nil and ({red:auth(cfg.username, cfg.password)}) or ({red:auth(cfg.password)}),
                1,
                2
            )
            if authed == nil or authed == false then
                red:close()
                return nil, "redis AUTH: " .. tostring(authErr)
            end
        end
        if cfg.database ~= 0 then
            local selected, selErr = red:select(cfg.database)
            if selected == nil or selected == false then
                red:close()
                return nil, (("redis SELECT " .. tostring(cfg.database)) .. ": ") .. tostring(selErr)
            end
        end
    end
    return red, nil
end
--- Returns a healthy connection to the pool.
function ____exports.release(red)
    local cfg = settings.cfg.redis
    local ok = red:set_keepalive(cfg.keepalive_timeout * 1000, cfg.pool_size)
    if ok == nil then
        red:close()
    end
end
--- Whether a command failed, settling the connection: nil means the connection broke
-- (close it), false that Redis answered with an error (the connection is still good).
function ____exports.failed(red, reply)
    if reply == nil then
        red:close()
        return true
    end
    if reply == false then
        ____exports.release(red)
        return true
    end
    return false
end
function ____exports.key(...)
    local parts = {...}
    return (settings.cfg.redis.prefix .. ":") .. table.concat(parts, ":")
end
return ____exports
