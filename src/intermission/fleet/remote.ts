// The fleet's shared state in Redis:
//   <prefix>:scope:<scope>  JSON { mode, since, until, ttl, reason }, expiring with the
//                           pause (so the fleet resumes by itself even if every node is
//                           gone); absent = running
//   <prefix>:scopes         set of scope names, for the reconcile
//   <prefix>:version        incremented by every change: a node that has seen version V
//                           has seen every change up to V
//   <prefix>:events         channel; every change publishes "<scope>\n<JSON>", the JSON
//                           being the new record (or {} for a resume) with its version
//
// Deadlines never travel as clock readings: a message carries the TTL in seconds and a
// reconcile reads what Redis has left of the key's expiry (PTTL), and each node adds that
// to its own clock. `since` and `until` (the origin's clock) are informational only; `until`
// stays in the record for nodes of earlier versions during a rolling upgrade.
//
// Scripts go as EVALSHA (the script's text only after Redis answers NOSCRIPT, e.g. after a
// restart or SCRIPT FLUSH), so a call costs its own size on the wire, not the script's.
import * as cjson from "cjson.safe";
import { connect, release, failed, key, Redis } from "./connection";

export interface RemoteRecord {
  mode: "paused" | "maintenance";
  /** Seconds of the pause still to run, as the sender knew it; 0 = no expiry. */
  ttl: number;
  reason: string;
  /** The origin's clock: for old nodes and for reading, never for deciding. */
  since?: number;
  until?: number;
}

export const CHANNEL_SUFFIX = "events";

interface Script {
  text: string;
  sha?: string;
}

// KEYS: scope key, scopes set, version key. ARGV: mode ("" = resume), ttl seconds, reason,
// scope, channel, the origin's clock (informational).
const CHANGE: Script = {
  text: `
local old = redis.call('GET', KEYS[1])
local mode = ARGV[1]
local ttl = tonumber(ARGV[2])
local version = redis.call('INCR', KEYS[3])
local msg
if mode == '' then
  redis.call('DEL', KEYS[1])
  msg = cjson.encode({ version = version })
else
  local now = tonumber(ARGV[6])
  local since = now
  if old then
    local ok, prev = pcall(cjson.decode, old)
    if ok and type(prev) == 'table' and prev.mode == mode and tonumber(prev.since) then since = prev.since end
  end
  local untilTs = 0
  if ttl > 0 then untilTs = now + ttl end
  local rec = cjson.encode({ mode = mode, since = since, ['until'] = untilTs, ttl = ttl, reason = ARGV[3] })
  if ttl > 0 then
    redis.call('SET', KEYS[1], rec, 'PX', math.max(1, math.floor(ttl * 1000)))
  else
    redis.call('SET', KEYS[1], rec)
  end
  redis.call('SADD', KEYS[2], ARGV[4])
  msg = cjson.encode({ mode = mode, since = since, ['until'] = untilTs, ttl = ttl, reason = ARGV[3], version = version })
end
-- The message carries the new record, so subscribers need no second round trip.
redis.call('PUBLISH', ARGV[5], ARGV[4] .. '\\n' .. msg)
return { old or '', version }
`,
};

// KEYS: scopes set, version key. ARGV: scope key prefix.
// Returns { version, scope1, record1, pttl1, scope2, ... } for the scopes not running.
const READ_ALL: Script = {
  text: `
local out = { redis.call('GET', KEYS[2]) or '0' }
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local k = ARGV[1] .. n
  local v = redis.call('GET', k)
  if v then
    out[#out + 1] = n
    out[#out + 1] = v
    out[#out + 1] = redis.call('PTTL', k)
  end
end
return out
`,
};

// KEYS: nodes set. ARGV: node key prefix. Returns how many listed nodes have a live heartbeat.
const LIVE_NODES: Script = {
  text: `
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  n = n + redis.call('EXISTS', ARGV[1] .. id)
end
return n
`,
};

function toHex(bytes: string): string {
  const [hex] = string.gsub(bytes, ".", (c: string) => string.format("%02x", string.byte(c)));
  return hex;
}

/** EVALSHA, and EVAL (which also loads the script) when Redis does not know it. */
function run(red: Redis, script: Script, numKeys: number, ...args: (string | number)[]):
  LuaMultiReturn<[RedisReply | false | undefined, string | undefined]> {
  if (script.sha === undefined) script.sha = toHex(ngx.sha1_bin(script.text));
  const [reply, err] = red.evalsha(script.sha, numKeys, ...args);
  if (reply === false && err !== undefined && string.find(err, "NOSCRIPT", 1, true)[0] !== undefined) {
    return red.eval(script.text, numKeys, ...args);
  }
  return $multi(reply, err);
}

/** A record as stored or published, or undefined for running (or unreadable). */
export function decode(text: unknown): LuaMultiReturn<[RemoteRecord | undefined, number | undefined]> {
  if (type(text) !== "string" || text === "") return $multi(undefined, undefined);
  const [rec] = cjson.decode(text as string);
  if (type(rec) !== "table") return $multi(undefined, undefined);
  const r = rec as { mode?: unknown; ttl?: unknown; until?: unknown; reason?: unknown; since?: unknown; version?: unknown };
  const version = type(r.version) === "number" ? (r.version as number) : undefined;
  if (r.mode !== "paused" && r.mode !== "maintenance") return $multi(undefined, version);
  let ttl: number;
  if (type(r.ttl) === "number") {
    ttl = r.ttl as number;
  } else {
    // From a node of an earlier version, which sends only the absolute `until`.
    const until = type(r.until) === "number" ? (r.until as number) : 0;
    ttl = until > 0 ? math.max(0.001, until - ngx.now()) : 0;
  }
  return $multi({
    mode: r.mode,
    ttl,
    reason: type(r.reason) === "string" ? (r.reason as string) : "",
    since: type(r.since) === "number" ? (r.since as number) : undefined,
    until: type(r.until) === "number" ? (r.until as number) : undefined,
  }, version);
}

/**
 * Writes a change for the whole fleet. Returns whether it was written, the previous
 * record (nil = running), the error, and the fleet's version after the change.
 */
export function change(scope: string, mode: "paused" | "maintenance" | "", ttl: number, reason: string):
  LuaMultiReturn<[boolean, RemoteRecord | undefined, string | undefined, number]> {
  const [red, err] = connect();
  if (red === undefined) return $multi(false, undefined, err, 0);
  const [reply, evalErr] = run(red, CHANGE, 3, key("scope", scope), key("scopes"), key("version"), mode, ttl, reason, scope,
    key(CHANNEL_SUFFIX), ngx.now());
  if (failed(red, reply)) return $multi(false, undefined, `redis: ${evalErr}`, 0);
  release(red);
  const [old, version] = reply as unknown as [string, number];
  const [previous] = decode(old);
  return $multi(true, previous, undefined, version);
}

/** Every scope that is not running, with its remaining TTL from Redis, and the fleet's version. */
export function readAll(): LuaMultiReturn<[{ [scope: string]: RemoteRecord } | undefined, number, string | undefined]> {
  const [red, err] = connect();
  if (red === undefined) return $multi(undefined, 0, err);
  const [reply, e1] = run(red, READ_ALL, 2, key("scopes"), key("version"), key("scope") + ":");
  if (failed(red, reply)) return $multi(undefined, 0, `redis: ${e1}`);
  release(red);
  const list = reply as unknown as (string | number)[];
  const out: { [scope: string]: RemoteRecord } = {};
  for (let i = 1; i < list.length; i += 3) {
    const [rec] = decode(list[i + 1]);
    const pttl = list[i + 2] as number;
    if (rec !== undefined && pttl !== -2) {
      // PTTL -1: no expiry. Redis's own count of what is left, so no clock is compared.
      rec.ttl = pttl >= 0 ? math.max(0.001, pttl / 1000) : 0;
      out[list[i] as string] = rec;
    }
  }
  return $multi(out, tonumber(list[0]) ?? 0, undefined);
}

/**
 * How many nodes have a live heartbeat: one round trip and one number back, whatever the
 * fleet's size (fleetStatus reads and decodes every heartbeat).
 */
export function liveNodes(): LuaMultiReturn<[number | undefined, string | undefined]> {
  const [red, err] = connect();
  if (red === undefined) return $multi(undefined, err);
  const [reply, e1] = run(red, LIVE_NODES, 1, key("nodes"), key("node") + ":");
  if (failed(red, reply)) return $multi(undefined, `redis: ${e1}`);
  release(red);
  return $multi(reply as unknown as number, undefined);
}
