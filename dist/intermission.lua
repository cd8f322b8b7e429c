local ____exports = {}
local config = require("intermission.config")
local ____settings = require("intermission.settings")
local settings = ____settings.settings
local ____shm = require("intermission.shm")
local bindZones = ____shm.bindZones
local gate = require("intermission.gate")
local ____control = require("intermission.control")
local controlHandler = ____control.control
____exports._VERSION = "0.1.0"
--- Validates the options; a bad one stops nginx from starting, with the reason.
function ____exports.setup(options)
    local cfg, err = config.parse(options)
    if cfg == nil then
        error(
            "intermission.setup: " .. tostring(err),
            2
        )
    end
    local ok, zoneErr = bindZones(cfg.dict)
    if not ok then
        error(
            "intermission.setup: " .. tostring(zoneErr),
            2
        )
    end
    settings.cfg = cfg
    settings.ready = true
end
function ____exports.init_worker()
    if not settings.ready then
        ngx.log(ngx.ERR, "intermission: setup() was not called in init_by_lua; using the defaults")
        settings.ready = true
    end
    local ok, err = bindZones(settings.cfg.dict)
    if not ok then
        ngx.log(
            ngx.ERR,
            "intermission: " .. tostring(err)
        )
    end
end
local busy = gate.busy
local pass = gate.pass
local slow = gate.gate
--- access_by_lua: costs one shared-dict read (and the in-flight count) while running.
function ____exports.access()
    if not busy() then
        return pass()
    end
    local ok, err = pcall(slow)
    if not ok then
        ngx.log(
            ngx.ERR,
            "intermission: access failed, request passed: " .. tostring(err)
        )
    end
end
local done = gate.done
--- log_by_lua: gives back the request's in-flight count and release-window slot.
function ____exports.log()
    local ok, err = pcall(done)
    if not ok then
        ngx.log(
            ngx.ERR,
            "intermission: log failed: " .. tostring(err)
        )
    end
end
--- content_by_lua for the control location.
function ____exports.control()
    controlHandler()
end
return ____exports
