local ____exports = {}
local ____shm = require("intermission.shm")
local keysFor = ____shm.keysFor
local state = require("intermission.state")
local release = require("intermission.release")
local counters = require("intermission.counters")
local inflight = require("intermission.inflight")
local STATES = {
    "running",
    "paused",
    "maintenance",
    "draining",
    "outage"
}
local function label(value)
    local escaped = string.gsub(value, "[\\\"\n]", {["\\"] = "\\\\", ["\""] = "\\\"", ["\n"] = "\\n"})
    return escaped
end
function ____exports.renderMetrics(scopes, current)
    local seen = false
    for ____, s in ipairs(scopes) do
        if s == current then
            seen = true
        end
    end
    if not seen then
        scopes[#scopes + 1] = current
    end
    local lines = {}
    local function family(name, kind, help)
        lines[#lines + 1] = (("# HELP " .. name) .. " ") .. help
        lines[#lines + 1] = (("# TYPE " .. name) .. " ") .. kind
    end
    family("intermission_state", "gauge", "1 for the scope's current state, 0 for the others.")
    for ____, s in ipairs(scopes) do
        local mode = state.settle(keysFor(s))
        for ____, m in ipairs(STATES) do
            lines[#lines + 1] = (((("intermission_state{scope=\"" .. label(s)) .. "\",state=\"") .. m) .. "\"} ") .. tostring(m == mode and 1 or 0)
        end
    end
    family("intermission_held", "gauge", "Requests held on this node now.")
    for ____, s in ipairs(scopes) do
        lines[#lines + 1] = (("intermission_held{scope=\"" .. label(s)) .. "\"} ") .. tostring(release.heldNow(keysFor(s)))
    end
    family("intermission_queued", "gauge", "Tickets waiting for their turn on this node.")
    for ____, s in ipairs(scopes) do
        lines[#lines + 1] = (("intermission_queued{scope=\"" .. label(s)) .. "\"} ") .. tostring(release.queued(keysFor(s)))
    end
    family("intermission_release_window", "gauge", "The release window now (slow start: 1 after a resume, doubling per success).")
    for ____, s in ipairs(scopes) do
        lines[#lines + 1] = (("intermission_release_window{scope=\"" .. label(s)) .. "\"} ") .. tostring(release.progress(keysFor(s)).window)
    end
    family("intermission_release_leases", "gauge", "Window slots held by released requests whose response has not started.")
    for ____, s in ipairs(scopes) do
        lines[#lines + 1] = (("intermission_release_leases{scope=\"" .. label(s)) .. "\"} ") .. tostring(release.progress(keysFor(s)).leases)
    end
    family("intermission_in_flight", "gauge", "Requests on this node passed to the upstream and not yet finished (all scopes).")
    lines[#lines + 1] = "intermission_in_flight " .. tostring(inflight.total())
    family("intermission_requests_total", "counter", "Held requests by outcome (held counts every hold).")
    for ____, s in ipairs(scopes) do
        for ____, name in ipairs(counters.COUNTER_NAMES) do
            lines[#lines + 1] = (((("intermission_requests_total{scope=\"" .. label(s)) .. "\",outcome=\"") .. name) .. "\"} ") .. tostring(counters.read(
                keysFor(s),
                name
            ))
        end
    end
    family("intermission_passed_unheld_total", "counter", "Requests passed unheld because their own scope (and default, the whole node) ran while another scope was stopped.")
    for s, n in pairs(counters.passedUnheldByScope()) do
        lines[#lines + 1] = (("intermission_passed_unheld_total{scope=\"" .. label(s)) .. "\"} ") .. tostring(n)
    end
    family("intermission_hold_duration_seconds", "histogram", "How long held requests waited, whatever the outcome.")
    for ____, s in ipairs(scopes) do
        local buckets, total, sum = counters.holdHistogram(keysFor(s))
        local l = label(s)
        do
            local i = 0
            while i < #counters.HOLD_BUCKETS do
                lines[#lines + 1] = (((("intermission_hold_duration_seconds_bucket{scope=\"" .. l) .. "\",le=\"") .. tostring(counters.HOLD_BUCKETS[i + 1])) .. "\"} ") .. tostring(buckets[i + 1])
                i = i + 1
            end
        end
        lines[#lines + 1] = (("intermission_hold_duration_seconds_bucket{scope=\"" .. l) .. "\",le=\"+Inf\"} ") .. tostring(total)
        lines[#lines + 1] = (("intermission_hold_duration_seconds_sum{scope=\"" .. l) .. "\"} ") .. tostring(sum)
        lines[#lines + 1] = (("intermission_hold_duration_seconds_count{scope=\"" .. l) .. "\"} ") .. tostring(total)
    end
    family("intermission_outage_duration_seconds", "histogram", "How long unplanned outages lasted (from the first failed connection to the prober's first accepted one).")
    for ____, s in ipairs(scopes) do
        local buckets, total, sum = counters.holdHistogram(
            keysFor(s),
            "outage_"
        )
        local l = label(s)
        do
            local i = 0
            while i < #counters.HOLD_BUCKETS do
                lines[#lines + 1] = (((("intermission_outage_duration_seconds_bucket{scope=\"" .. l) .. "\",le=\"") .. tostring(counters.HOLD_BUCKETS[i + 1])) .. "\"} ") .. tostring(buckets[i + 1])
                i = i + 1
            end
        end
        lines[#lines + 1] = (("intermission_outage_duration_seconds_bucket{scope=\"" .. l) .. "\",le=\"+Inf\"} ") .. tostring(total)
        lines[#lines + 1] = (("intermission_outage_duration_seconds_sum{scope=\"" .. l) .. "\"} ") .. tostring(sum)
        lines[#lines + 1] = (("intermission_outage_duration_seconds_count{scope=\"" .. l) .. "\"} ") .. tostring(total)
    end
    return table.concat(lines, "\n") .. "\n"
end
return ____exports
