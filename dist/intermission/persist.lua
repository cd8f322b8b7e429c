local ____exports = {}
local cjson = require("cjson.safe")
local ____shm = require("intermission.shm")
local zones = ____shm.zones
local num = ____shm.num
local keysFor = ____shm.keysFor
local knownScopes = ____shm.knownScopes
local ensureScope = ____shm.ensureScope
local ____settings = require("intermission.settings")
local settings = ____settings.settings
local ____mode = require("intermission.mode")
local modeOf = ____mode.modeOf
local writeMode = ____mode.writeMode
local release = require("intermission.release")
local waiters = require("intermission.waiters")
--- How often a worker that holds requests reads the file.
local FILE_LOOK_EVERY = 0.5
--- A pause counts as resumed elsewhere only if the file was written this long after it
-- began: workers' cached clocks differ by milliseconds, and a file written just before a
-- pause made in this nginx must never end it.
local CLOCK_MARGIN = 1
--- The file named by nginx's build: <client body temp path>/intermission.state.
function ____exports.defaultPath()
    local ok, configure = pcall(function() return ngx.config.nginx_configure() end)
    local dir
    if ok and type(configure) == "string" then
        local found = string.match(configure, "%-%-http%-client%-body%-temp%-path=(%S+)")
        dir = found
    end
    if dir == nil then
        dir = ngx.config.prefix() .. "client_body_temp"
    end
    return dir .. "/intermission.state"
end
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
        resolved = ____exports.defaultPath()
    end
    return resolved
end
local complained = false
--- Rewrites the file from the state zone. Control path only.
function ____exports.save()
    local file = path()
    if file == nil then
        return
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
    local text = cjson.encode({
        written = ngx.now(),
        scopes = #scopes > 0 and scopes or nil
    })
    local tmp = ((file .. ".") .. tostring(ngx.worker.pid())) .. ".tmp"
    local f, openErr = io.open(tmp, "w")
    local err = f == nil and tostring(openErr) or nil
    if f ~= nil then
        local wrote, writeErr = f:write(text or "{}", "\n")
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
    if err ~= nil then
        if not complained then
            ngx.log(ngx.ERR, (("intermission: cannot keep the pause state in " .. file) .. " (a binary upgrade would end a pause; set setup({ state_file = ... }) to a path the workers can write, or false): ") .. err)
        end
        complained = true
    else
        complained = false
    end
end
local function load(file)
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
                scopes[#scopes + 1] = {
                    scope = e.scope,
                    mode = e.mode,
                    since = e.since,
                    ["until"] = e["until"],
                    reason = type(e.reason) == "string" and e.reason or ""
                }
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
    local saved = load(file)
    if saved == nil then
        return
    end
    local now = ngx.now()
    for ____, e in ipairs(saved.scopes) do
        do
            if e["until"] ~= 0 and e["until"] <= now then
                goto __continue35
            end
            local keys = keysFor(e.scope)
            local made, err = ensureScope(keys, settings.cfg.max_scopes)
            if not made then
                ngx.log(
                    ngx.ERR,
                    (((((("intermission: cannot restore the " .. e.mode) .. " of scope ") .. e.scope) .. " from ") .. file) .. ": ") .. tostring(err)
                )
                goto __continue35
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
        ::__continue35::
    end
end
local lookedAt = 0
--- The watcher, while this worker holds requests: a scope stopped here that the file,
-- written well after its pause began, no longer lists was resumed through another
-- master (a binary upgrade): resume it here too.
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
                goto __continue43
            end
            if saved.written < num(zones.state, keys.since) + CLOCK_MARGIN then
                goto __continue43
            end
            local listed = false
            for ____, e in ipairs(saved.scopes) do
                if e.scope == keys.scope then
                    listed = true
                end
            end
            if listed then
                goto __continue43
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
        ::__continue43::
    end
end
waiters.setLookOutside(lookOutside)
return ____exports
