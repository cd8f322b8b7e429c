// The floor under the release figure: the least any hold in nginx can cost. A module with
// intermission's public functions that holds each request on a semaphore of its own while
// a flag in the state zone says so, and at the resume wakes every held request of its
// worker at once (the other worker sees the flag within a millisecond): no tickets, no
// order, no window, no lease, no counters. What it costs against a plain burst is the
// machine's own bound on the release (the held requests' wake-ups, their proxying and the
// client reading the answers); what intermission costs above it is its protocol's.
import { stubRoot } from "./nginx.ts";

const FLOOR_MODULE = `
local semaphore = require("ngx.semaphore")
local M = {}
local dict
local held, first, last = {}, 1, 0
local polling = false

local function wakeAll()
  for i = first, last do held[i]:post(1); held[i] = nil end
  first = last + 1
end

local function poll(premature)
  if first > last then polling = false return end
  if premature or dict:get("floor") ~= 1 then wakeAll() polling = false return end
  ngx.timer.at(0.001, poll)
end

function M.setup() end
function M.init_worker() dict = ngx.shared.intermission end
function M.header_filter() end
function M.log() end

function M.access()
  if dict:get("floor") ~= 1 then return end
  local s = semaphore.new(0)
  last = last + 1
  held[last] = s
  dict:incr("held", 1, 0)
  if not polling then polling = true ngx.timer.at(0.001, poll) end
  s:wait(300)
  dict:incr("held", -1, 0)
end

function M.control()
  local uri = ngx.var.uri
  if uri:find("/pause$") then dict:set("floor", 1)
  elseif uri:find("/resume$") then dict:set("floor", 0) wakeAll() end
  local n = dict:get("held") or 0
  ngx.say('{"state": "running", "held": ', n, ', "queued": ', n, ', "in_flight": 0, "release": {"leases": 0}}')
end

return M
`;

/** A root (dist/ and nginx/) whose intermission module is the floor above. */
export function floorRoot(root: string, dir: string): string {
  return stubRoot(root, dir, "floor", FLOOR_MODULE);
}
