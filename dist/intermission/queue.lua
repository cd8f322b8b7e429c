local ____exports = {}
local ____shm = require("intermission.shm")
local zones = ____shm.zones
local num = ____shm.num
local ____settings = require("intermission.settings")
local settings = ____settings.settings
local LEFT = "left"
--- Safety bound on one advance() call; each step is a few dict operations.
local MAX_STEPS = 100000
--- How long per-ticket keys live: past any hold, then they clean themselves up. They are
-- never deleted early: a deleted position key could be added again by a late advancer.
local function ticketTtl()
    return settings.cfg.max_hold + 60
end
function ____exports.slotKey(keys, releaseGen)
    return keys.slotsPrefix .. tostring(releaseGen)
end
--- Takes the next ticket. Tickets are positive and strictly increasing per scope.
function ____exports.issue(keys)
    local ticket, err = zones.state:incr(keys.seq, 1, 0)
    if ticket == nil then
        return nil, "cannot issue a ticket: " .. tostring(err)
    end
    return ticket, nil
end
--- Tickets issued but not yet granted (they may include some that left).
function ____exports.waiting(keys)
    return num(zones.state, keys.seq) - num(zones.state, keys.grant)
end
function ____exports.head(keys)
    return num(zones.state, keys.grant)
end
--- The release generation that granted this ticket, LEFT if it left first,
-- or undefined if it is still waiting.
function ____exports.claimOf(keys, ticket)
    local v = zones.queue:get(keys.claimPrefix .. tostring(ticket))
    return v
end
--- Grants waiting tickets in order while the release window has room.
-- Returns how many were granted. Never yields.
function ____exports.advance(keys)
    local state = zones.state
    local queue = zones.queue
    local mode = state:get(keys.mode)
    if mode == "paused" or mode == "maintenance" then
        return 0
    end
    local releaseGen = num(state, keys.releaseGen)
    local slots = ____exports.slotKey(keys, releaseGen)
    local window = settings.cfg.release_window
    local ttl = ticketTtl()
    local granted = 0
    do
        local step = 0
        while step < MAX_STEPS do
            do
                local position = num(state, keys.grant)
                if position >= num(state, keys.seq) then
                    break
                end
                local used = state:incr(slots, 1, 0, ttl)
                if used == nil then
                    break
                end
                if used > window then
                    state:incr(slots, -1)
                    break
                end
                local next = position + 1
                local owner = queue:add(
                    keys.positionPrefix .. tostring(next),
                    true,
                    ttl
                )
                if not owner then
                    state:incr(slots, -1)
                    goto __continue12
                end
                state:set(keys.grant, next)
                local won = queue:add(
                    keys.claimPrefix .. tostring(next),
                    releaseGen,
                    ttl
                )
                if won then
                    granted = granted + 1
                else
                    state:incr(slots, -1)
                end
            end
            ::__continue12::
            step = step + 1
        end
    end
    return granted
end
--- A held request gives up its place. "left": it is out of the queue and must not go
-- upstream. "granted": its turn came first; the caller decides whether it goes now
-- or gives the slot back with releaseSlot().
function ____exports.leave(keys, ticket)
    local ok = zones.queue:add(
        keys.claimPrefix .. tostring(ticket),
        LEFT,
        ticketTtl()
    )
    if ok then
        return "left", 0
    end
    local claim = ____exports.claimOf(keys, ticket)
    if type(claim) == "number" then
        return "granted", claim
    end
    return "left", 0
end
--- Gives back a release-window slot and lets the next ticket go. Never yields.
function ____exports.releaseSlot(keys, releaseGen)
    zones.state:incr(
        ____exports.slotKey(keys, releaseGen),
        -1
    )
    ____exports.advance(keys)
end
return ____exports
