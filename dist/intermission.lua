local ____exports = {}
local nodeId, stateZone
local config = require("intermission.config")
local ____settings = require("intermission.settings")
local settings = ____settings.settings
local ____shm = require("intermission.shm")
local bindZones = ____shm.bindZones
local zones = ____shm.zones
local BUSY_KEY = ____shm.BUSY_KEY
local SEQ_BASE_KEY = ____shm.SEQ_BASE_KEY
local upgradeScopes = ____shm.upgradeScopes
local stateZoneTooSmall = ____shm.stateZoneTooSmall
local gate = require("intermission.gate")
local inflight = require("intermission.inflight")
local ____busy = require("intermission.busy")
local bindBusy = ____busy.bindBusy
local allRunning = ____busy.allRunning
local ____fleetmode = require("intermission.fleetmode")
local fleet = ____fleetmode.fleet
local loadFleet = ____fleetmode.loadFleet
local record = require("intermission.record")
local ____control = require("intermission.control")
local controlHandler = ____control.control
local persist = require("intermission.persist")
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
____exports._VERSION = "0.2.0"
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
    local tooSmall = stateZoneTooSmall(cfg.max_scopes, cfg.dict)
    if tooSmall ~= nil then
        error("intermission.setup: " .. tooSmall, 2)
    end
    if cfg.store == "redis" then
        local loaded, loadErr = loadFleet()
        if not loaded then
            error(
                "intermission.setup: " .. tostring(loadErr),
                2
            )
        end
    end
    settings.cfg = cfg
    settings.ready = true
    local fresh = zones.state:safe_add(BUSY_KEY, 0)
    zones.state:safe_add(SEQ_BASE_KEY, 0)
    upgradeScopes()
    if fresh then
        persist.restore()
    end
    stateZone = zones.state
    bindBusy(zones.state)
    if cfg.store == "redis" then
        fleet.sync.node.id = nodeId()
        fleet.sync.markPending()
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
            ("intermission: " .. tostring(err)) .. "; requests pass unheld"
        )
        return
    end
    zones.state:safe_add(BUSY_KEY, 0)
    upgradeScopes()
    stateZone = zones.state
    bindBusy(zones.state)
    inflight.init()
    if settings.cfg.store == "redis" and fleet.sync ~= nil then
        fleet.sync.start()
    end
end
local slow = gate.gate
local settleRecord = gate.settleRecord
local responseStarted = gate.responseStarted
local retryHandler = gate.retry
local enter = inflight.enter
local leave = inflight.leave
local requestKey = record.requestKey
local requestKeyAndStart = record.requestKeyAndStart
local recordIfNew = record.recordIfNew
local forgetForwarded = record.forgetForwarded
local anyMapped = record.anyMapped
local lookup = record.lookup
local forget = record.forget
--- access_by_lua. Running: one shared-dict read, and the request recorded under its
-- pointer (in an FFI array: no allocation) so that log() undoes exactly this, once.
function ____exports.access()
    local zone = stateZone
    if zone == nil then
        return
    end
    local r, start = requestKeyAndStart()
    if allRunning() and recordIfNew(r, start) then
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
--- header_filter_by_lua (optional): a released request's window slot comes back as its response starts.
function ____exports.header_filter()
    if not anyMapped() then
        return
    end
    local rec = lookup(requestKey())
    if rec == nil or type(rec) == "number" then
        return
    end
    local ok, err = pcall(responseStarted, rec)
    if not ok then
        ngx.log(
            ngx.ERR,
            "intermission: header_filter failed: " .. tostring(err)
        )
    end
end
--- log_by_lua: gives back what access() took (in-flight count, window slot, queue place).
function ____exports.log()
    local r = requestKey()
    if forgetForwarded(r) then
        return leave()
    end
    if not anyMapped() then
        return
    end
    local rec = lookup(r)
    if rec == nil then
        return
    end
    forget(r)
    if type(rec) == "number" then
        return leave()
    end
    local ok, err = pcall(settleRecord, rec)
    if not ok then
        ngx.log(
            ngx.ERR,
            "intermission: log failed: " .. tostring(err)
        )
    end
end
--- content_by_lua of the retry location: `error_page 502 504 =
-- 
-- @intermission_retry ;` in
-- the protected location sends a released request whose upstream connection failed
-- here, to be held again at the head of the queue and sent once more.
function ____exports.retry()
    local ok, err = pcall(retryHandler)
    if not ok then
        ngx.log(
            ngx.ERR,
            "intermission: retry failed: " .. tostring(err)
        )
        return ngx.exit(502)
    end
end
--- content_by_lua for the control location.
function ____exports.control()
    controlHandler()
end
return ____exports
