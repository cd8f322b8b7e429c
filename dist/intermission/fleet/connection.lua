local ____exports = {}
local redis = require("resty.redis")
local ____settings = require("intermission.settings")
local settings = ____settings.settings
--- A ready connection, or (nil, err).
function ____exports.connect()
    local cfg = settings.cfg.redis
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
function ____exports.key(...)
    local parts = {...}
    return (settings.cfg.redis.prefix .. ":") .. table.concat(parts, ":")
end
return ____exports
