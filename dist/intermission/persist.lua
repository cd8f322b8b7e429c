local ____exports = {}
local cjson = require("cjson.safe")
local ____shm = require("intermission.shm")
local zones = ____shm.zones
local num = ____shm.num
local keysFor = ____shm.keysFor
local knownScopes = ____shm.knownScopes
local ____reclaim = require("intermission.reclaim")
local createLocked = ____reclaim.createLocked
local ____settings = require("intermission.settings")
local settings = ____settings.settings
local ____mode = require("intermission.mode")
local modeOf = ____mode.modeOf
local writeMode = ____mode.writeMode
local release = require("intermission.release")
local waiters = require("intermission.waiters")
local ____params = require("intermission.params")
local validScope = ____params.validScope
local MAX_TTL = ____params.MAX_TTL
local MAX_REASON = ____params.MAX_REASON
local ____burst = require("intermission.burst")
local logOnce = ____burst.logOnce
--- How often a worker that holds requests reads the file.
local FILE_LOOK_EVERY = 0.5
--- A pause counts as resumed elsewhere only if the file was written this long after it
-- began: a file written just before a pause made in this nginx (another worker's save that
-- read the zone before the pause and renamed after it) must never end it. Both stamps come
-- from this host's clock; `since` is the pausing worker's cached time, at most the length
-- of one event-loop turn behind, and `written` is read fresh before the zone is read: a
-- tenth of a second covers that, and a resume made sooner than that after its pause is
-- the only change not passed on.
local CLOCK_MARGIN = 0.1
--- nginx's compiled-in client body temp directory: the default file is <it>/intermission.state.
local function defaultDir()
    local ok, configure = pcall(function() return ngx.config.nginx_configure() end)
    if ok and type(configure) == "string" then
        local found = string.match(configure, "%-%-http%-client%-body%-temp%-path=(%S+)")
        if found ~= nil then
            return found
        end
    end
    return ngx.config.prefix() .. "client_body_temp"
end
--- Whether `dir` exists (a directory opens for reading; its reads are what fail).
local function dirExists(dir)
    local f = io.open(dir, "r")
    if f == nil then
        return false
    end
    f:close()
    return true
end
--- The default file, or false when its directory is missing; looked up once per process.
local resolved
local function path()
    local p = settings.cfg.state_file
    if p == false then
        return nil
    end
    if p ~= nil then
        return p
    end
    if resolved == nil then
        local dir = defaultDir()
        resolved = dirExists(dir) and dir .. "/intermission.state" or false
        if resolved == false then
            ngx.log(ngx.WARN, ("intermission: no state file: " .. dir) .. " (nginx's default client_body_temp_path) does not exist, so pauses are not kept across a restart or binary upgrade; set setup({ state_file = \"/a/path/the/workers/can/write\" }), or state_file = false to silence this")
        end
    end
    local ____temp_0
    if resolved == false then
        ____temp_0 = nil
    else
        ____temp_0 = resolved
    end
    return ____temp_0
end
--- Writes `text` to `file` in place (not atomic): the fallback when no temporary file can be made next to it.
local function writeInPlace(file, text)
    local f, openErr = io.open(file, "w")
    if f == nil then
        return tostring(openErr)
    end
    local wrote, writeErr = f:write(text, "\n")
    f:close()
    return wrote == nil and tostring(writeErr) or nil
end
--- Rewrites the file from the state zone. Control path only. Returns what went wrong, if
-- anything, for the control answer (state_file_error): a file that cannot be rewritten is
-- removed, since what it lists is no longer true and the next start would restore it.
function ____exports.save()
    local file = path()
    if file == nil then
        return nil
    end
    ngx.update_time()
    local scopes = {}
    for ____, scope in ipairs(knownScopes()) do
        local keys = keysFor(scope)
        local mode = modeOf(keys)
        if mode == "paused" or mode == "maintenance" then
            local reason = zones.state:get(keys.reason)
            scopes[#scopes + 1] = {
                scope = scope,
                mode = mode,
                since = num(zones.state, keys.since),
                ["until"] = num(zones.state, keys["until"]),
                reason = type(reason) == "string" and reason or ""
            }
        end
    end
    local encoded = cjson.encode({
        written = ngx.now(),
        scopes = #scopes > 0 and scopes or nil
    })
    local text = encoded or "{}"
    local tmp = ((file .. ".") .. tostring(ngx.worker.pid())) .. ".tmp"
    local f, openErr = io.open(tmp, "w")
    local err = f == nil and tostring(openErr) or nil
    if f ~= nil then
        local wrote, writeErr = f:write(text, "\n")
        f:close()
        if wrote == nil then
            err = writeErr
        else
            local renamed, renameErr = os.rename(tmp, file)
            if renamed == nil then
                err = renameErr
            end
        end
        if err ~= nil then
            os.remove(tmp)
        end
    end
    if err ~= nil and writeInPlace(file, text) == nil then
        err = nil
    end
    if err == nil then
        return nil
    end
    local removed, removeErr = os.remove(file)
    if removed ~= nil or (string.find(
        tostring(removeErr),
        "No such file",
        1,
        true
    )) ~= nil then
        logOnce(ngx.ERR, "state-file", ((("intermission: cannot write the pause state to " .. file) .. ": ") .. err) .. "; removed it, so a restart or binary upgrade now restores no pause (set setup({ state_file = ... }) to a path the workers can write, or false)")
        return ((("cannot write " .. file) .. " (") .. err) .. "); removed it: a restart or binary upgrade restores no pause"
    end
    logOnce(
        ngx.ERR,
        "state-file",
        ((((("intermission: cannot write the pause state to " .. file) .. ": ") .. err) .. "; nor remove it: ") .. tostring(removeErr)) .. "; a restart or binary upgrade would restore the pauses it still lists"
    )
    return ((((("cannot write " .. file) .. " (") .. err) .. ") nor remove it (") .. tostring(removeErr)) .. "): a restart or binary upgrade would restore what it lists"
end
--- Why an entry is not one the control API could have made, or undefined if it is.
local function invalid(e, now)
    if not validScope(e.scope) then
        return "not a valid scope name"
    end
    if e["until"] ~= e["until"] or e["until"] < 0 or e["until"] > now + MAX_TTL + CLOCK_MARGIN then
        return ((("until " .. tostring(e["until"])) .. " is not within the longest ttl (") .. tostring(MAX_TTL)) .. " s) from now"
    end
    if e.since ~= e.since or e.since <= 0 or e.since > now + CLOCK_MARGIN then
        return ("since " .. tostring(e.since)) .. " is not a time up to now"
    end
    if #e.reason > MAX_REASON then
        return ("reason longer than " .. tostring(MAX_REASON)) .. " bytes"
    end
    return nil
end
--- The file's valid entries. `report`: log a notice for each entry skipped (setup only, not the watcher's every look).
local function load(file, report)
    if report == nil then
        report = false
    end
    local f = io.open(file, "r")
    if f == nil then
        return nil
    end
    local text = f:read("*a")
    f:close()
    if type(text) ~= "string" then
        return nil
    end
    local data = cjson.decode(text)
    if type(data) ~= "table" then
        return nil
    end
    local d = data
    if type(d.written) ~= "number" then
        return nil
    end
    local scopes = {}
    if type(d.scopes) == "table" then
        for ____, e in ipairs(d.scopes) do
            if type(e) == "table" and type(e.scope) == "string" and (e.mode == "paused" or e.mode == "maintenance") and type(e.since) == "number" and type(e["until"]) == "number" then
                local entry = {
                    scope = e.scope,
                    mode = e.mode,
                    since = e.since,
                    ["until"] = e["until"],
                    reason = type(e.reason) == "string" and e.reason or ""
                }
                local why = invalid(
                    entry,
                    ngx.now()
                )
                if why == nil then
                    scopes[#scopes + 1] = entry
                elseif report then
                    ngx.log(ngx.NOTICE, (((("intermission: state file " .. file) .. ": skipped the ") .. e.mode) .. " of a scope: ") .. why)
                end
            elseif report then
                ngx.log(ngx.NOTICE, ("intermission: state file " .. file) .. ": skipped an entry that is not a pause or maintenance")
            end
        end
    end
    return {written = d.written, scopes = scopes}
end
--- setup(), zones just created: puts back each pause and maintenance still in force.
-- Runs in the master before any worker exists, so no lock is needed.
function ____exports.restore()
    local file = path()
    if file == nil or settings.cfg.store == "redis" then
        return
    end
    local saved = load(file, true)
    if saved == nil then
        return
    end
    local now = ngx.now()
    for ____, e in ipairs(saved.scopes) do
        do
            if e["until"] ~= 0 and e["until"] <= now then
                goto __continue48
            end
            local keys = keysFor(e.scope)
            local made, err = createLocked(keys, settings.cfg.max_scopes)
            if not made then
                ngx.log(
                    ngx.ERR,
                    (((((("intermission: cannot restore the " .. e.mode) .. " of scope ") .. e.scope) .. " from ") .. file) .. ": ") .. tostring(err)
                )
                goto __continue48
            end
            local st = zones.state
            st:safe_set(keys.since, e.since)
            st:safe_set(keys["until"], e["until"])
            st:safe_set(keys.reason, e.reason)
            writeMode(
                keys,
                modeOf(keys),
                e.mode
            )
            ngx.log(
                ngx.NOTICE,
                (((((((("intermission: audit action=restore scope=" .. e.scope) .. " mode=") .. e.mode) .. " until=") .. tostring(e["until"])) .. " reason=") .. e.reason) .. " from=") .. file
            )
        end
        ::__continue48::
    end
end
local lookedAt = 0
--- The file's entry for a scope, if the file was written well after this pause began.
local function newerEntry(saved, keys)
    if saved.written < num(zones.state, keys.since) + CLOCK_MARGIN then
        return false
    end
    for ____, e in ipairs(saved.scopes) do
        if e.scope == keys.scope then
            return e
        end
    end
    return nil
end
--- Takes on what the file says of a scope stopped here, if it is later or stricter: a
-- later until (0, no expiry, is latest), maintenance where it is paused; with them the
-- file's reason. Never earlier or milder: a file a moment behind a change made in this
-- nginx must not undo it. Caller holds the scope's lock. Returns what changed, if anything.
local function adoptLocked(keys, e)
    local st = zones.state
    local mode = modeOf(keys)
    if mode ~= "paused" and mode ~= "maintenance" then
        return nil
    end
    local ____until = num(st, keys["until"])
    local later = ____until ~= 0 and (e["until"] == 0 or e["until"] > ____until)
    local stricter = mode == "paused" and e.mode == "maintenance"
    if not later and not stricter then
        return nil
    end
    if later then
        st:safe_set(keys["until"], e["until"])
    end
    st:safe_set(keys.reason, e.reason)
    if stricter then
        writeMode(keys, mode, "maintenance")
    end
    return (((("was=" .. mode) .. " mode=") .. modeOf(keys)) .. " until=") .. tostring(num(st, keys["until"]))
end
local function adopted(keys, what, saved)
    ngx.log(
        ngx.NOTICE,
        (((("intermission: audit action=adopt scope=" .. keys.scope) .. " reason=state-file ") .. what) .. " written=") .. tostring(saved.written)
    )
end
--- release.ts, under the scope's lock, when a pause's until has passed: true if the file
-- (written after this pause began) carries it on, which this worker then takes on. So an
-- old worker never resumes on its stale until after a refresh through the new master. One
-- read of a small file per expiry, never on the hot path of a running node.
local function carriedOn(keys, now)
    local file = path()
    if file == nil then
        return false
    end
    local ok, saved = pcall(load, file)
    if not ok or saved == nil then
        return false
    end
    local e = newerEntry(saved, keys)
    if e == nil or e == false then
        return false
    end
    local what = adoptLocked(keys, e)
    if what == nil then
        return false
    end
    adopted(keys, what, saved)
    waiters.poke()
    local ____until = num(zones.state, keys["until"])
    return ____until == 0 or now < ____until
end
--- The watcher, while this worker holds requests: a scope stopped here that the file,
-- written well after its pause began, no longer lists was resumed through another
-- master (a binary upgrade): resume it here too. One it lists later or stricter (a
-- refresh, a maintenance through the other master) is taken on (adoptLocked).
local function lookOutside(scopes)
    local file = path()
    if file == nil then
        return
    end
    local now = ngx.now()
    if now - lookedAt < FILE_LOOK_EVERY then
        return
    end
    lookedAt = now
    local saved = load(file)
    if saved == nil then
        return
    end
    for ____, keys in ipairs(scopes) do
        do
            local mode = modeOf(keys)
            if mode ~= "paused" and mode ~= "maintenance" then
                goto __continue72
            end
            local e = newerEntry(saved, keys)
            if e == false then
                goto __continue72
            end
            if e ~= nil then
                local what = release.withScopeLock(
                    keys,
                    function(k) return adoptLocked(k, e) or "" end
                )
                if what ~= nil and what ~= "" then
                    adopted(keys, what, saved)
                    waiters.poke()
                end
                goto __continue72
            end
            local next = release.withScopeLock(
                keys,
                function(k) return release.resumeLocked(
                    k,
                    ngx.now()
                ) end
            )
            if next ~= nil then
                ngx.log(
                    ngx.NOTICE,
                    (((("intermission: audit action=resume scope=" .. keys.scope) .. " reason=state-file was=") .. mode) .. " written=") .. tostring(saved.written)
                )
                waiters.poke()
            end
        end
        ::__continue72::
    end
end
waiters.setLookOutside(lookOutside)
release.setExpiryCheck(carriedOn)
return ____exports
