local ____exports = {}
--- The defaults, each justified in the README's option table.
function ____exports.defaults()
    return {
        store = "shared_dict",
        dict = "intermission",
        max_hold = 30,
        on_timeout = "reject",
        pause_ttl = 120,
        max_held = 1000,
        release_window = 64,
        health_check_paths = {"/up"},
        legacy_endpoints = false,
        retry_after = 5,
        max_scopes = 1000,
        release_lease = 5,
        failure_statuses = {[502] = true, [503] = true, [504] = true},
        poll_interval = 0.002,
        outage_hold = 10
    }
end
local KNOWN_OPTIONS = {
    store = true,
    redis = true,
    dict = true,
    max_hold = true,
    on_timeout = true,
    pause_ttl = true,
    max_held = true,
    release_window = true,
    health_check_paths = true,
    privileged_user_agent = true,
    control_token = true,
    legacy_endpoints = true,
    retry_after = true,
    poll_interval = true,
    max_scopes = true,
    release_lease = true,
    failure_statuses = true,
    ready_probe = true,
    fleet_release_window = true,
    state_file = true,
    outage_hold = true
}
local KNOWN_REDIS_OPTIONS = {
    host = true,
    port = true,
    password = true,
    username = true,
    database = true,
    prefix = true,
    connect_timeout = true,
    read_timeout = true,
    pool_size = true,
    keepalive_timeout = true,
    sentinels = true,
    master_name = true
}
local function isNumber(v)
    return type(v) == "number" and v == v
end
local function numberOption(raw, name, fallback, min, max, integer)
    local v = raw[name]
    if v == nil then
        return fallback, nil
    end
    if not isNumber(v) or v < min or v > max or integer and math.floor(v) ~= v then
        local kind = integer and "an integer" or "a number"
        return nil, (((((((("option \"" .. name) .. "\" must be ") .. kind) .. " from ") .. tostring(min)) .. " to ") .. tostring(max)) .. ", got ") .. tostring(v)
    end
    return v, nil
end
local function stringOption(raw, name, allowed)
    local v = raw[name]
    if v == nil then
        return nil, nil
    end
    if type(v) ~= "string" or v == "" then
        return nil, (("option \"" .. name) .. "\" must be a non-empty string, got ") .. tostring(v)
    end
    if allowed ~= nil then
        for ____, a in ipairs(allowed) do
            if a == v then
                return v, nil
            end
        end
        return nil, ((((("option \"" .. name) .. "\" must be one of ") .. table.concat(allowed, ", ")) .. ", got \"") .. v) .. "\""
    end
    return v, nil
end
local function unknownKey(raw, known, what)
    for k in pairs(raw) do
        if type(k) ~= "string" or known[k] == nil then
            return ((("unknown " .. what) .. " \"") .. tostring(k)) .. "\""
        end
    end
    return nil
end
local function redisOptions(v)
    if type(v) ~= "table" then
        return nil, "option \"redis\" must be a table like { host = \"127.0.0.1\", port = 6379 }"
    end
    local raw = v
    local unknown = unknownKey(raw, KNOWN_REDIS_OPTIONS, "redis option")
    if unknown ~= nil then
        return nil, unknown
    end
    local host, hostErr = stringOption(raw, "host")
    if hostErr ~= nil then
        return nil, "redis " .. hostErr
    end
    local port, portErr = numberOption(
        raw,
        "port",
        6379,
        1,
        65535,
        true
    )
    if portErr ~= nil then
        return nil, "redis " .. portErr
    end
    local database, dbErr = numberOption(
        raw,
        "database",
        0,
        0,
        1024,
        true
    )
    if dbErr ~= nil then
        return nil, "redis " .. dbErr
    end
    local password, pwErr = stringOption(raw, "password")
    if pwErr ~= nil then
        return nil, "redis " .. pwErr
    end
    local username, userErr = stringOption(raw, "username")
    if userErr ~= nil then
        return nil, "redis " .. userErr
    end
    local prefix, prefixErr = stringOption(raw, "prefix")
    if prefixErr ~= nil then
        return nil, "redis " .. prefixErr
    end
    local connectTimeout, ctErr = numberOption(
        raw,
        "connect_timeout",
        0.2,
        0.001,
        60,
        false
    )
    if ctErr ~= nil then
        return nil, "redis " .. ctErr
    end
    local readTimeout, rtErr = numberOption(
        raw,
        "read_timeout",
        1,
        0.001,
        60,
        false
    )
    if rtErr ~= nil then
        return nil, "redis " .. rtErr
    end
    local poolSize, psErr = numberOption(
        raw,
        "pool_size",
        16,
        1,
        10000,
        true
    )
    if psErr ~= nil then
        return nil, "redis " .. psErr
    end
    local keepalive, kaErr = numberOption(
        raw,
        "keepalive_timeout",
        60,
        0,
        3600,
        false
    )
    if kaErr ~= nil then
        return nil, "redis " .. kaErr
    end
    local masterName, mnErr = stringOption(raw, "master_name")
    if mnErr ~= nil then
        return nil, "redis " .. mnErr
    end
    local sentinels
    if raw.sentinels ~= nil then
        local bad = "redis option \"sentinels\" must be a list like { { host = \"10.0.0.1\", port = 26379 } }"
        if type(raw.sentinels) ~= "table" then
            return nil, bad
        end
        sentinels = {}
        for ____, entry in ipairs(raw.sentinels) do
            if type(entry) ~= "table" then
                return nil, bad
            end
            local e = entry
            local h, hErr = stringOption(e, "host")
            local pt, pErr = numberOption(
                e,
                "port",
                26379,
                1,
                65535,
                true
            )
            if h == nil or hErr ~= nil or pErr ~= nil then
                return nil, bad
            end
            sentinels[#sentinels + 1] = {host = h, port = pt}
        end
        if #sentinels == 0 then
            return nil, bad
        end
        if raw.host ~= nil then
            return nil, "redis options \"host\" and \"sentinels\" exclude each other"
        end
        if username ~= nil then
            return nil, "redis option \"username\" is not supported with \"sentinels\" (lua-resty-redis-connector 0.06 sends the password only)"
        end
    end
    return {
        host = host or "127.0.0.1",
        port = port,
        password = password,
        username = username,
        database = database,
        prefix = prefix or "intermission",
        connect_timeout = connectTimeout,
        read_timeout = readTimeout,
        pool_size = poolSize,
        keepalive_timeout = keepalive,
        sentinels = sentinels,
        master_name = masterName or "mymaster"
    }, nil
end
local function pathList(v)
    if type(v) == "string" then
        v = {v}
    end
    if type(v) ~= "table" then
        return nil, "option \"health_check_paths\" must be a list of paths like { \"/up\" }"
    end
    local paths = {}
    for ____, p in ipairs(v) do
        if type(p) ~= "string" or string.sub(p, 1, 1) ~= "/" then
            return nil, "option \"health_check_paths\" must hold paths starting with \"/\", got " .. tostring(p)
        end
        paths[#paths + 1] = p
    end
    return paths, nil
end
local KNOWN_PROBE_OPTIONS = {url = true, successes = true, interval = true, timeout = true}
local function readyProbe(v)
    if type(v) ~= "table" then
        return nil, "option \"ready_probe\" must be a table like { url = \"http://127.0.0.1:3000/up\" }"
    end
    local raw = v
    local unknown = unknownKey(raw, KNOWN_PROBE_OPTIONS, "ready_probe option")
    if unknown ~= nil then
        return nil, unknown
    end
    local url, urlErr = stringOption(raw, "url")
    if urlErr ~= nil then
        return nil, "ready_probe " .. urlErr
    end
    if url == nil or (string.match(url, "^http://[^:/]+:?%d*/?")) == nil then
        return nil, "ready_probe option \"url\" must be like \"http://10.0.0.5:3000/up\" (plain http; a host name needs nginx's resolver), got " .. tostring(url)
    end
    local successes, e1 = numberOption(
        raw,
        "successes",
        1,
        1,
        100,
        true
    )
    if e1 ~= nil then
        return nil, "ready_probe " .. e1
    end
    local interval, e2 = numberOption(
        raw,
        "interval",
        0.2,
        0.01,
        60,
        false
    )
    if e2 ~= nil then
        return nil, "ready_probe " .. e2
    end
    local timeout, e3 = numberOption(
        raw,
        "timeout",
        30,
        0.1,
        3600,
        false
    )
    if e3 ~= nil then
        return nil, "ready_probe " .. e3
    end
    return {url = url, successes = successes, interval = interval, timeout = timeout}, nil
end
local function statusSet(v)
    local bad = "option \"failure_statuses\" must be a list of HTTP statuses from 500 to 599, like { 502, 503, 504 }"
    if type(v) ~= "table" then
        return nil, bad
    end
    local out = {}
    for ____, s in ipairs(v) do
        if not isNumber(s) or s < 500 or s > 599 or math.floor(s) ~= s then
            return nil, bad
        end
        out[s] = true
    end
    return out, nil
end
--- Validates setup() options into a Config, or names the first bad option.
function ____exports.parse(input)
    local cfg = ____exports.defaults()
    if input == nil then
        return cfg, nil
    end
    if type(input) ~= "table" then
        return nil, "setup() takes a table of options"
    end
    local raw = input
    local unknown = unknownKey(raw, KNOWN_OPTIONS, "option")
    if unknown ~= nil then
        return nil, unknown
    end
    local store, storeErr = stringOption(raw, "store", {"shared_dict", "redis"})
    if storeErr ~= nil then
        return nil, storeErr
    end
    cfg.store = store or "shared_dict"
    if cfg.store == "redis" then
        local ____redisOptions_1 = redisOptions
        local ____raw_redis_0 = raw.redis
        if ____raw_redis_0 == nil then
            ____raw_redis_0 = {}
        end
        local redis, redisErr = ____redisOptions_1(____raw_redis_0)
        if redisErr ~= nil then
            return nil, redisErr
        end
        cfg.redis = redis
    elseif raw.redis ~= nil then
        return nil, "option \"redis\" needs store = \"redis\""
    end
    local dict, dictErr = stringOption(raw, "dict")
    if dictErr ~= nil then
        return nil, dictErr
    end
    if dict ~= nil then
        cfg.dict = dict
    end
    local maxHold, e1 = numberOption(
        raw,
        "max_hold",
        cfg.max_hold,
        0.001,
        86400,
        false
    )
    if e1 ~= nil then
        return nil, e1
    end
    cfg.max_hold = maxHold
    local onTimeout, e2 = stringOption(raw, "on_timeout", {"reject", "pass"})
    if e2 ~= nil then
        return nil, e2
    end
    if onTimeout ~= nil then
        cfg.on_timeout = onTimeout
    end
    local pauseTtl, e3 = numberOption(
        raw,
        "pause_ttl",
        cfg.pause_ttl,
        0,
        86400 * 7,
        false
    )
    if e3 ~= nil then
        return nil, e3
    end
    cfg.pause_ttl = pauseTtl
    local maxHeld, e4 = numberOption(
        raw,
        "max_held",
        cfg.max_held,
        1,
        1000000,
        true
    )
    if e4 ~= nil then
        return nil, e4
    end
    cfg.max_held = maxHeld
    local window, e5 = numberOption(
        raw,
        "release_window",
        cfg.release_window,
        1,
        100000,
        true
    )
    if e5 ~= nil then
        return nil, e5
    end
    cfg.release_window = window
    if raw.health_check_paths ~= nil then
        local paths, e6 = pathList(raw.health_check_paths)
        if e6 ~= nil then
            return nil, e6
        end
        cfg.health_check_paths = paths
    end
    local ua, e7 = stringOption(raw, "privileged_user_agent")
    if e7 ~= nil then
        return nil, e7
    end
    if ua ~= nil then
        local ____, ____, reErr = ngx.re.find("", ua, "jo")
        if reErr ~= nil then
            return nil, "option \"privileged_user_agent\" is not a valid regex: " .. reErr
        end
    end
    cfg.privileged_user_agent = ua
    local token, e8 = stringOption(raw, "control_token")
    if e8 ~= nil then
        return nil, e8
    end
    if token ~= nil and #token < 16 then
        return nil, "option \"control_token\" must be at least 16 characters"
    end
    cfg.control_token = token
    local legacy = raw.legacy_endpoints
    if legacy ~= nil and type(legacy) ~= "boolean" then
        return nil, "option \"legacy_endpoints\" must be true or false, got " .. tostring(legacy)
    end
    cfg.legacy_endpoints = legacy == true
    local retryAfter, e9 = numberOption(
        raw,
        "retry_after",
        cfg.retry_after,
        0,
        86400,
        true
    )
    if e9 ~= nil then
        return nil, e9
    end
    cfg.retry_after = retryAfter
    local poll, e10 = numberOption(
        raw,
        "poll_interval",
        cfg.poll_interval,
        0.001,
        1,
        false
    )
    if e10 ~= nil then
        return nil, e10
    end
    cfg.poll_interval = poll
    local maxScopes, e11 = numberOption(
        raw,
        "max_scopes",
        cfg.max_scopes,
        1,
        100000,
        true
    )
    if e11 ~= nil then
        return nil, e11
    end
    cfg.max_scopes = maxScopes
    local lease, e12 = numberOption(
        raw,
        "release_lease",
        cfg.release_lease,
        0.01,
        3600,
        false
    )
    if e12 ~= nil then
        return nil, e12
    end
    cfg.release_lease = lease
    if raw.ready_probe ~= nil then
        local probe, e14 = readyProbe(raw.ready_probe)
        if e14 ~= nil then
            return nil, e14
        end
        cfg.ready_probe = probe
    end
    local fleetWindow, e15 = numberOption(
        raw,
        "fleet_release_window",
        0,
        0,
        1000000,
        true
    )
    if e15 ~= nil then
        return nil, e15
    end
    if fleetWindow > 0 then
        if cfg.store ~= "redis" then
            return nil, "option \"fleet_release_window\" needs store = \"redis\""
        end
        cfg.fleet_release_window = fleetWindow
    end
    local outageHold, e16 = numberOption(
        raw,
        "outage_hold",
        cfg.outage_hold,
        0,
        86400,
        false
    )
    if e16 ~= nil then
        return nil, e16
    end
    cfg.outage_hold = outageHold
    if raw.failure_statuses ~= nil then
        local statuses, e13 = statusSet(raw.failure_statuses)
        if e13 ~= nil then
            return nil, e13
        end
        cfg.failure_statuses = statuses
    end
    if raw.state_file == false then
        cfg.state_file = false
    elseif raw.state_file ~= nil then
        local v = raw.state_file
        if type(v) ~= "string" or string.sub(v, 1, 1) ~= "/" or string.sub(v, -1) == "/" then
            return nil, "option \"state_file\" must be an absolute file path like \"/var/lib/nginx/body/intermission.state\", or false, got " .. tostring(v)
        end
        cfg.state_file = v
    end
    return cfg, nil
end
return ____exports
