local ____exports = {}
local idle, seal, tooMany, LOCK_TTL, SWEEP_EVERY, sweptAt
local ____shm = require("intermission.shm")
local zones = ____shm.zones
local num = ____shm.num
local knownScopes = ____shm.knownScopes
local keysFor = ____shm.keysFor
local SCOPE_COUNT_KEY = ____shm.SCOPE_COUNT_KEY
local SEQ_BASE_KEY = ____shm.SEQ_BASE_KEY
local sequenceKeys = ____shm.sequenceKeys
local plainNumericKeys = ____shm.plainNumericKeys
local stateKeys = ____shm.stateKeys
local proberKeys = ____shm.proberKeys
function idle(keys, now)
    local st = zones.state
    if (st:get(keys.mode)) ~= nil then
        return nil, 0
    end
    local mainSeq = num(st, keys.main.seq)
    local retrySeq = num(st, keys.retry.seq)
    if mainSeq ~= num(st, keys.main.head) or retrySeq ~= num(st, keys.retry.head) then
        return nil, 0
    end
    if num(st, keys.decided) < mainSeq + retrySeq then
        return nil, 0
    end
    if num(st, keys.unclaimed) ~= 0 or num(st, keys.used) ~= 0 then
        return nil, 0
    end
    if num(st, keys.backoffUntil) > now or num(st, keys.readyUntil) > now then
        return nil, 0
    end
    for ____, k in ipairs(proberKeys(keys)) do
        if (st:get(k)) ~= nil then
            return nil, 0
        end
    end
    return mainSeq, retrySeq
end
function seal(key, seen)
    local st = zones.state
    local v = st:incr(key, -____exports.SEAL)
    if v == nil then
        return false
    end
    if v == seen - ____exports.SEAL then
        return true
    end
    st:incr(key, ____exports.SEAL)
    return false
end
--- Deletes the scope's state if it is idle. Caller holds the scope's lock (it stays: the
-- caller deletes it). Never yields. True: reclaimed.
function ____exports.reclaimLocked(keys, now)
    local st = zones.state
    if (st:get(keys.made)) == nil then
        return false
    end
    local mainSeq, retrySeq = idle(keys, now)
    if mainSeq == nil then
        return false
    end
    if not seal(keys.main.seq, mainSeq) then
        return false
    end
    if not seal(keys.retry.seq, retrySeq) then
        st:incr(keys.main.seq, ____exports.SEAL)
        return false
    end
    st:delete(keys.made)
    st:incr(SCOPE_COUNT_KEY, -1)
    local high = math.max(
        mainSeq,
        retrySeq,
        num(st, keys.leaseSeq)
    ) + 1
    local base = num(st, SEQ_BASE_KEY)
    if base < high then
        st:incr(SEQ_BASE_KEY, high - base)
    end
    for ____, k in ipairs(stateKeys(keys)) do
        if k ~= keys.main.seq and k ~= keys.retry.seq then
            st:delete(k)
        end
    end
    st:delete(keys.main.seq)
    st:delete(keys.retry.seq)
    return true
end
function tooMany(maxScopes)
    return ("too many scopes: this node keeps at most max_scopes = " .. tostring(maxScopes)) .. " scopes that are stopped, holding or releasing (idle ones are reclaimed)"
end
--- Reclaims every idle scope whose lock it can take at once (never waits: the caller may
-- hold `except`'s lock). At most every SWEEP_EVERY per worker: a storm of refused new
-- scopes at a bound of live ones costs one scan a second. Returns how many went.
function ____exports.sweep(except)
    ngx.update_time()
    local now = ngx.now()
    if now - sweptAt < SWEEP_EVERY then
        return 0
    end
    sweptAt = now
    local st = zones.state
    local reclaimed = 0
    for ____, scope in ipairs(knownScopes()) do
        if scope ~= except then
            local keys = keysFor(scope)
            local locked = st:safe_add(keys.lock, true, LOCK_TTL)
            if locked then
                local ok, gone = pcall(____exports.reclaimLocked, keys, now)
                st:delete(keys.lock)
                if not ok then
                    ngx.log(
                        ngx.ERR,
                        (("intermission: reclaim of scope " .. scope) .. " failed: ") .. tostring(gone)
                    )
                elseif gone then
                    reclaimed = reclaimed + 1
                end
            end
        end
    end
    if reclaimed > 0 then
        ngx.log(
            ngx.INFO,
            ("intermission: reclaimed " .. tostring(reclaimed)) .. " idle scope(s) at the max_scopes bound"
        )
    end
    return reclaimed
end
--- incr(seq, -SEAL) seals a lane: far beyond any ticket number (< 1e14, printed exactly), within 2^53.
____exports.SEAL = 2 ^ 51
LOCK_TTL = 1
SWEEP_EVERY = 1
--- Makes the scope's state unless it has some, within max_scopes (meeting the bound, it
-- sweeps the idle scopes first). Caller holds the scope's lock, or is setup() in the
-- master (no worker yet). The numeric keys that a write outside the lock may have made
-- (a ready wait, a back-off) keep their values; the sequences start at the node's base.
function ____exports.createLocked(keys, maxScopes)
    local zone = zones.state
    if (zone:get(keys.made)) ~= nil then
        return true, nil
    end
    zone:safe_add(SCOPE_COUNT_KEY, 0)
    local count, err = zone:incr(SCOPE_COUNT_KEY, 1)
    if count == nil then
        return false, "cannot count scopes: " .. tostring(err)
    end
    if count > maxScopes then
        zone:incr(SCOPE_COUNT_KEY, -1)
        if ____exports.sweep(keys.scope) == 0 then
            return false, tooMany(maxScopes)
        end
        count, err = zone:incr(SCOPE_COUNT_KEY, 1)
        if count == nil then
            return false, "cannot count scopes: " .. tostring(err)
        end
        if count > maxScopes then
            zone:incr(SCOPE_COUNT_KEY, -1)
            return false, tooMany(maxScopes)
        end
    end
    zone:safe_add(SEQ_BASE_KEY, 0)
    local base = num(zone, SEQ_BASE_KEY)
    local function fail(why)
        zone:incr(SCOPE_COUNT_KEY, -1)
        return false, (("cannot create scope " .. keys.scope) .. ": ") .. why
    end
    for ____, k in ipairs(sequenceKeys(keys)) do
        local ok, setErr = zone:safe_set(k, base)
        if not ok then
            return fail(setErr)
        end
    end
    local okDecided, decidedErr = zone:safe_set(keys.decided, 2 * base)
    if not okDecided then
        return fail(decidedErr)
    end
    for ____, k in ipairs(plainNumericKeys(keys)) do
        local ok, addErr = zone:safe_add(k, 0)
        if not ok and addErr ~= "exists" then
            return fail(addErr)
        end
    end
    local added, markErr = zone:safe_add(keys.made, base)
    if not added then
        return fail(markErr)
    end
    return true, nil
end
sweptAt = -math.huge
return ____exports
