local ____exports = {}
local startProber, takeOver, endProber, parseUrl, probeOnce, prober, parseAddress, connectProber, PROBER_PREFIX, TAKEOVER_LEASE, CONNECT_PREFIX, CONNECT_FIRST, CONNECT_MAX, MAX_ADDRESSES
local ____shm = require("intermission.shm")
local zones = ____shm.zones
local keysFor = ____shm.keysFor
local num = ____shm.num
local ____settings = require("intermission.settings")
local settings = ____settings.settings
local counters = require("intermission.counters")
local waiters = require("intermission.waiters")
local liveness = require("intermission.liveness")
function startProber(keys, prefix, seconds, fn, target)
    local mine = zones.state:safe_add(
        prefix .. keys.scope,
        target,
        seconds + 5,
        liveness.me()
    )
    if not mine then
        return nil
    end
    local ok, err = ngx.timer.at(0, fn, keys.scope, target)
    if ok then
        return nil
    end
    zones.state:delete(prefix .. keys.scope)
    zones.state:safe_set(keys.readyUntil, 0)
    return err
end
function takeOver(keys, prefix, fn)
    local st = zones.state
    local key = prefix .. keys.scope
    local target, holder = st:get(key)
    local pid = holder
    if type(target) ~= "string" or not liveness.gone(
        pid,
        ngx.now()
    ) then
        return
    end
    local taker = st:safe_add(
        (key .. "|") .. tostring(pid),
        true,
        TAKEOVER_LEASE
    )
    if not taker then
        return
    end
    local set = st:safe_set(
        key,
        target,
        math.max(
            num(st, keys.readyUntil) - ngx.now(),
            0
        ) + 5,
        liveness.me()
    )
    if not set then
        return
    end
    ngx.log(
        ngx.NOTICE,
        ((((("intermission: " .. (prefix == CONNECT_PREFIX and "connect" or "ready")) .. " prober of scope ") .. keys.scope) .. " taken over from worker ") .. tostring(pid)) .. " (gone)"
    )
    local ok, err = ngx.timer.at(0, fn, keys.scope, target)
    if ok then
        return
    end
    endProber(keys, prefix)
    ngx.log(
        ngx.ERR,
        (("intermission: cannot start the prober of scope " .. keys.scope) .. " again, releasing at once: ") .. tostring(err)
    )
end
function endProber(keys, prefix)
    zones.state:safe_set(keys.readyUntil, 0)
    zones.state:delete(prefix .. keys.scope)
    waiters.poke()
end
function parseUrl(url)
    local host, port, path = string.match(url, "^http://([^:/]+):?(%d*)(.*)$")
    if host == nil then
        return nil
    end
    return {
        host = host,
        port = port == "" and 80 or tonumber(port),
        path = path == "" and "/" or path
    }
end
function probeOnce(target, timeout)
    local sock = ngx.socket.tcp()
    sock:settimeout(timeout * 1000)
    local ok, err = sock:connect(target.host, target.port)
    if ok == nil then
        return false, "connect: " .. tostring(err)
    end
    local sent, sendErr = sock:send(((("GET " .. target.path) .. " HTTP/1.0\r\nHost: ") .. target.host) .. "\r\nUser-Agent: intermission-ready-probe\r\nConnection: close\r\n\r\n")
    if sent == nil then
        sock:close()
        return false, "send: " .. tostring(sendErr)
    end
    local line, readErr = sock:receive("*l")
    sock:close()
    if line == nil then
        return false, "read: " .. tostring(readErr)
    end
    local status = string.match(line, "^HTTP/%d%.%d (%d%d%d)")
    if status == nil then
        return false, "not an HTTP answer: " .. string.sub(line, 1, 60)
    end
    local code = tonumber(status)
    return code >= 200 and code < 300, "status " .. status
end
function prober(premature, scope, _url)
    local keys = keysFor(scope)
    local probe = settings.cfg.ready_probe
    local started = ngx.now()
    local streak = 0
    local failures = 0
    local last = ""
    local target = parseUrl(probe.url)
    while not premature and not ngx.worker.exiting() do
        ngx.update_time()
        local ____until = num(zones.state, keys.readyUntil)
        if ____until == 0 then
            break
        end
        if ngx.now() >= ____until then
            ngx.log(
                ngx.WARN,
                ((((((("intermission: ready probe " .. probe.url) .. " for scope ") .. scope) .. " timed out after ") .. tostring(probe.timeout)) .. "s (") .. last) .. "); releasing the held requests anyway"
            )
            break
        end
        local good, detail = probeOnce(
            target,
            math.min(probe.interval * 4, 2)
        )
        last = detail
        if good then
            streak = streak + 1
            if streak >= probe.successes then
                ngx.log(
                    ngx.NOTICE,
                    ((((((("intermission: ready probe " .. probe.url) .. " for scope ") .. scope) .. " passed ") .. tostring(streak)) .. "x after ") .. string.format(
                        "%.3f",
                        ngx.now() - started
                    )) .. "s; releasing"
                )
                break
            end
        else
            streak = 0
            failures = failures + 1
            counters.count(keys, "probe_failures")
        end
        ngx.sleep(probe.interval)
    end
    ngx.update_time()
    counters.add(
        keys,
        "ready_wait_seconds",
        ngx.now() - started
    )
    endProber(keys, PROBER_PREFIX)
    if failures > 0 then
        ngx.log(
            ngx.INFO,
            ((("intermission: ready probe for scope " .. scope) .. ": ") .. tostring(failures)) .. " failed attempt(s)"
        )
    end
end
function parseAddress(one)
    if string.sub(one, 1, 5) == "unix:" then
        return {host = one, port = 0}
    end
    local v6, v6port = string.match(one, "^%[(.+)%]:(%d+)$")
    if v6 ~= nil then
        return {
            host = v6,
            port = tonumber(v6port)
        }
    end
    local host, port = string.match(one, "^([^:]+):(%d+)$")
    if host == nil then
        return nil
    end
    return {
        host = host,
        port = tonumber(port)
    }
end
--- Every address of $upstream_addr ("a:1, b:2 : c:3": a comma between the servers one
-- try went through, backups included, " : " between the groups of internal redirects),
-- each once, in order. A group name (no live server) is not an address.
function ____exports.addressesOf(addr)
    local list = {}
    local seen = {}
    for one in string.gmatch(addr, "[^%s,]+") do
        if one ~= ":" and seen[one] == nil and #list < MAX_ADDRESSES then
            seen[one] = true
            local a = parseAddress(one)
            if a ~= nil then
                list[#list + 1] = a
            end
        end
    end
    return list
end
--- Whether the address accepts a TCP connection within timeoutMs (closed at once).
function ____exports.accepts(a, timeoutMs)
    if timeoutMs == nil then
        timeoutMs = 500
    end
    if a.port == 0 then
        local f, err = io.open(string.sub(a.host, 6))
        if f ~= nil then
            f:close()
        elseif err ~= nil then
            local missing = string.find(err, "No such file", 1, true)
            if missing ~= nil then
                return false
            end
        end
    end
    local sock = ngx.socket.tcp()
    sock:settimeout(timeoutMs)
    local ok = unpack(
        a.port > 0 and ({sock:connect(a.host, a.port)}) or ({sock:connect(a.host)}),
        1,
        1
    )
    if ok == nil then
        return false
    end
    sock:close()
    return true
end
function connectProber(_premature, scope, addr)
    local keys = keysFor(scope)
    local started = ngx.now()
    local addresses = ____exports.addressesOf(addr)
    local pause = CONNECT_FIRST
    do
        while true do
            ngx.update_time()
            local ____until = num(zones.state, keys.readyUntil)
            if ____until == 0 then
                break
            end
            if ngx.now() >= ____until then
                ngx.log(
                    ngx.WARN,
                    ((((("intermission: upstream " .. addr) .. " for scope ") .. scope) .. " refused connections for ") .. string.format(
                        "%.1f",
                        ngx.now() - started
                    )) .. "s; trying the held requests anyway"
                )
                break
            end
            local open
            for ____, a in ipairs(addresses) do
                if ____exports.accepts(a) then
                    open = a
                    break
                end
            end
            if open ~= nil then
                ngx.update_time()
                ngx.log(
                    ngx.NOTICE,
                    ((((("intermission: upstream " .. (open.port > 0 and (open.host .. ":") .. tostring(open.port) or open.host)) .. " for scope ") .. scope) .. " accepts connections again after ") .. string.format(
                        "%.3f",
                        ngx.now() - started
                    )) .. "s; releasing"
                )
                break
            end
            ngx.sleep(pause)
            pause = math.min(pause * 2, CONNECT_MAX)
        end
    end
    endProber(keys, CONNECT_PREFIX)
end
--- Whether the release of this scope waits for the ready probe now.
function ____exports.waiting(keys)
    return num(zones.state, keys.readyUntil) > ngx.now()
end
PROBER_PREFIX = "#prober|"
--- Starts waiting for readiness (called under the scope's lock, at resume).
function ____exports.startWaiting(keys, now)
    local probe = settings.cfg.ready_probe
    zones.state:safe_set(keys.readyUntil, now + probe.timeout)
    local err = startProber(
        keys,
        PROBER_PREFIX,
        probe.timeout,
        prober,
        probe.url
    )
    if err ~= nil then
        ngx.log(ngx.ERR, (("intermission: cannot start the ready probe for scope " .. keys.scope) .. ", releasing at once: ") .. err)
    end
end
TAKEOVER_LEASE = 5
--- While the release waits (readyUntil), a prober lost with its worker (kill -9, a crash:
-- its claim stays, naming a pid that is gone) is started again here, by the watcher of a
-- worker that holds requests of the scope. Without it the release would wait until
-- readyUntil: the ready probe's timeout, or the failed request's deadline (max_hold).
function ____exports.ensureProbers(keys)
    if not ____exports.waiting(keys) or ngx.worker.exiting() then
        return
    end
    takeOver(keys, PROBER_PREFIX, prober)
    takeOver(keys, CONNECT_PREFIX, connectProber)
end
CONNECT_PREFIX = "#connect|"
CONNECT_FIRST = 0.05
CONNECT_MAX = 0.5
MAX_ADDRESSES = 16
--- A released request's upstream connection failed: the scope's release waits (as for the
-- ready probe, readyUntil) until ANY address of the failed try (`$upstream_addr`: the
-- group's primary servers and its backups) accepts a TCP connection again, or `until`.
-- One timer per scope and node connects, never a request. False: no address can be
-- probed (the caller backs off instead).
function ____exports.waitForConnect(keys, addr, ____until)
    if #____exports.addressesOf(addr) == 0 then
        return false
    end
    local st = zones.state
    if num(st, keys.readyUntil) < ____until then
        st:safe_set(keys.readyUntil, ____until)
    end
    local err = startProber(
        keys,
        CONNECT_PREFIX,
        ____until - ngx.now(),
        connectProber,
        addr
    )
    if err == nil then
        return true
    end
    ngx.log(ngx.ERR, (((("intermission: cannot probe " .. addr) .. " for scope ") .. keys.scope) .. ": ") .. err)
    return false
end
return ____exports
