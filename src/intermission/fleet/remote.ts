// The fleet's shared state in Redis, one key per scope:
//   <prefix>:scope:<scope>  JSON { mode, since, until, reason }, expiring at `until`
//                           (so the fleet resumes by itself even if every node is gone);
//                           absent = running
//   <prefix>:scopes         set of scope names, for the reconcile
//   <prefix>:events         channel; every change publishes "<scope>\n<record JSON or empty>"
// Each change is one EVAL: read the old record, write the new one, publish, atomically.
import * as cjson from "cjson.safe";
import { connect, release, failed, key } from "./connection";

export interface RemoteRecord {
  mode: "paused" | "maintenance";
  since: number;
  until: number;
  reason: string;
}

// KEYS: scope key, scopes set. ARGV: mode ("" = resume), now, ttl seconds, reason, scope, channel.
const CHANGE = `
local old = redis.call('GET', KEYS[1])
local mode = ARGV[1]
local rec = ''
if mode == '' then
  redis.call('DEL', KEYS[1])
else
  local since = tonumber(ARGV[2])
  if old then
    local prev = cjson.decode(old)
    if prev.mode == mode then since = prev.since end
  end
  local ttl = tonumber(ARGV[3])
  local untilTs = 0
  if ttl > 0 then untilTs = tonumber(ARGV[2]) + ttl end
  rec = cjson.encode({ mode = mode, since = since, ['until'] = untilTs, reason = ARGV[4] })
  if ttl > 0 then
    redis.call('SET', KEYS[1], rec, 'PX', math.floor(ttl * 1000))
  else
    redis.call('SET', KEYS[1], rec)
  end
  redis.call('SADD', KEYS[2], ARGV[5])
end
-- The message carries the new record, so subscribers need no second round trip.
redis.call('PUBLISH', ARGV[6], ARGV[5] .. '\\n' .. rec)
return old or ''
`;

export const CHANNEL_SUFFIX = "events";

export function decode(text: unknown): RemoteRecord | undefined {
  if (type(text) !== "string" || text === "") return undefined;
  const [rec] = cjson.decode(text as string);
  if (type(rec) !== "table") return undefined;
  const r = rec as RemoteRecord;
  if (r.mode !== "paused" && r.mode !== "maintenance") return undefined;
  return r;
}

/** Writes a change for the whole fleet. Returns the previous record (nil = running). */
export function change(scope: string, mode: "paused" | "maintenance" | "", ttl: number, reason: string):
  LuaMultiReturn<[boolean, RemoteRecord | undefined, string | undefined]> {
  const [red, err] = connect();
  if (red === undefined) return $multi(false, undefined, err);
  const [old, evalErr] = red.eval(CHANGE, 2, key("scope", scope), key("scopes"), mode, ngx.now(), ttl, reason, scope,
    key(CHANNEL_SUFFIX));
  if (failed(red, old)) return $multi(false, undefined, `redis: ${evalErr}`);
  release(red);
  return $multi(true, decode(old), undefined);
}

/** Every scope's record (running scopes are absent). */
export function readAll(): LuaMultiReturn<[{ [scope: string]: RemoteRecord | false } | undefined, string | undefined]> {
  const [red, err] = connect();
  if (red === undefined) return $multi(undefined, err);
  const [names, e1] = red.eval(`
local names = redis.call('SMEMBERS', KEYS[1])
local out = {}
for i, n in ipairs(names) do
  out[#out + 1] = n
  out[#out + 1] = redis.call('GET', ARGV[1] .. n) or ''
end
return out`, 1, key("scopes"), key("scope") + ":");
  if (failed(red, names)) return $multi(undefined, `redis: ${e1}`);
  release(red);
  const out: { [scope: string]: RemoteRecord | false } = {};
  const list = names as unknown as string[];
  for (let i = 0; i < list.length; i += 2) {
    out[list[i]] = decode(list[i + 1]) ?? false;
  }
  return $multi(out, undefined);
}
