local ____exports = {}
local ____shm = require("intermission.shm")
local zones = ____shm.zones
local ____lock = require("intermission.lock")
local lock = ____lock.lock
local unlock = ____lock.unlock
local KEY = "#fleet|unsettled"
--- At most this many remembered (each line some 60 bytes): the newest win.
local MAX = 16
local function lines()
    local out = {}
    local v = zones.state:get(KEY)
    if type(v) ~= "string" then
        return out
    end
    for line in string.gmatch(v, "[^\n]+") do
        out[#out + 1] = line
    end
    return out
end
local function store(list)
    if #list == 0 then
        zones.state:delete(KEY)
        return
    end
    local ok, err = zones.state:safe_set(
        KEY,
        table.concat(list, "\n")
    )
    if not ok then
        ngx.log(
            ngx.ERR,
            "intermission: fleet: cannot remember a change of unknown outcome: " .. tostring(err)
        )
    end
end
--- The ids of this node's changes to `scope` whose outcome is unknown.
function ____exports.forScope(scope)
    local ids = {}
    for ____, line in ipairs(lines()) do
        local s, id = string.match(line, "^(%S+) (%S+)")
        if s == scope and id ~= nil then
            ids[#ids + 1] = id
        end
    end
    return ids
end
--- Every change of unknown outcome this node remembers (usually none: one shared-dict read).
function ____exports.all()
    local out = {}
    for ____, line in ipairs(lines()) do
        local scope, id, action = string.match(line, "^(%S+) (%S+) (%S+)$")
        if scope ~= nil and id ~= nil and action ~= nil then
            out[#out + 1] = {scope = scope, id = id, action = action}
        end
    end
    return out
end
--- Remembers a change of unknown outcome.
function ____exports.note(scope, id, action)
    local token = lock()
    local list = lines()
    list[#list + 1] = (((scope .. " ") .. id) .. " ") .. action
    while #list > MAX do
        table.remove(list, 1)
    end
    store(list)
    if token ~= nil then
        unlock(token)
    end
end
--- Forgets the given ids of `scope`: they are settled (a later change fenced them, or the sync loop settled them).
function ____exports.settled(scope, ids)
    local gone = {}
    for ____, id in ipairs(ids) do
        gone[(scope .. " ") .. id] = true
    end
    local token = lock()
    local list = {}
    for ____, line in ipairs(lines()) do
        local key = string.match(line, "^(%S+ %S+)")
        if key == nil or gone[key] == nil then
            list[#list + 1] = line
        end
    end
    store(list)
    if token ~= nil then
        unlock(token)
    end
end
return ____exports
