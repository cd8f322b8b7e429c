local ____exports = {}
local nodeId, stateZone
local config = require("intermission.config")
local ____settings = require("intermission.settings")
local settings = ____settings.settings
local ____shm = require("intermission.shm")
local bindZones = ____shm.bindZones
local zones = ____shm.zones
local BUSY_KEY = ____shm.BUSY_KEY
local gate = require("intermission.gate")
local inflight = require("intermission.inflight")
local fleet = require("intermission.fleet.sync")
local ____control = require("intermission.control")
local controlHandler = ____control.control
function nodeId()
    local host = "nginx"
    local f = io.open("/etc/hostname", "r")
    if f ~= nil then
        local line = f:read("*l")
        f:close()
        if type(line) == "string" and line ~= "" then
            host = line
        end
    end
    return (host .. ":") .. tostring(ngx.worker.pid())
end
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
    stateZone = zones.state
    if cfg.store == "redis" then
        fleet.node.id = nodeId()
        fleet.markPending()
    end
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
    stateZone = zones.state
    if settings.cfg.store == "redis" then
        fleet.start()
    end
end
local slow = gate.gate
local recordsPending = gate.recordsPending
local settleRecord = gate.settleRecord
local enter = inflight.enter
local leave = inflight.leave
--- access_by_lua: while every scope runs, one shared-dict read and a local count.
function ____exports.access()
    if (stateZone:get(BUSY_KEY)) == nil then
        return enter()
    end
    local ok, err = pcall(slow)
    if not ok then
        ngx.log(
            ngx.ERR,
            "intermission: access failed, request passed: " .. tostring(err)
        )
    end
end
--- log_by_lua: gives back the request's in-flight count and release-window slot.
function ____exports.log()
    if not recordsPending() then
        return leave()
    end
    local ok, err = pcall(settleRecord)
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
