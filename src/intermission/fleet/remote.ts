// The fleet's shared state in Redis:
//   <prefix>:scope:<scope>  JSON { mode, since, until, ttl, reason }, expiring with the
//                           pause (so the fleet resumes by itself even if every node is
//                           gone); absent = running
//   <prefix>:scopes         set of scope names, for the reconcile
//   <prefix>:version        incremented by every change: a node that has seen version V
//                           has seen every change up to V
//   <prefix>:events         channel; every change publishes "<scope>\n<JSON>", the JSON
//                           being the new record (or {} for a resume) with its version
//   <prefix>:change:<id>    the fate of one change (CHANGE_ID_TTL): its version once
//                           applied, or "cancelled" once a settle (or a later change from
//                           the same node) fenced it before it ran; see settle()
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
import { settings } from "../settings";

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

// KEYS: scope key, scopes set, version key, this change's key, then the keys of earlier
// changes from this node whose fate is unknown (fenced here: see settle). ARGV: mode
// ("" = resume), ttl seconds, reason, scope, channel, the origin's clock (informational),
// CHANGE_ID_TTL. Returns { old record or '', version }, or { 'cancelled' } when this
// change was fenced before it ran (it then changes nothing).
const CHANGE: Script = {
  text: `
for i = 5, #KEYS do
  if not redis.call('GET', KEYS[i]) then redis.call('SET', KEYS[i], 'cancelled', 'EX', ARGV[7]) end
end
if redis.call('GET', KEYS[4]) then return { 'cancelled' } end
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
redis.call('SET', KEYS[4], version, 'EX', ARGV[7])
return { old or '', version }
`,
};

// KEYS: a change's key, version key. ARGV: CHANGE_ID_TTL. Settles the change's fate for
// good: its version if it was applied, else fences it ("cancelled": CHANGE then refuses to
// run); and the fleet's version now. One script, so Redis runs it wholly before or wholly
// after the change, whatever order the two arrive in.
const SETTLE: Script = {
  text: `
local now = redis.call('GET', KEYS[2]) or '0'
local st = redis.call('GET', KEYS[1])
if st then return { st, now } end
redis.call('SET', KEYS[1], 'cancelled', 'EX', ARGV[1])
return { 'cancelled', now }
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
 * How long Redis keeps a change's fate (seconds). A command that was sent runs within
 * moments of Redis reading it; one still in flight is retried by TCP for about 15 minutes
 * at most (Linux's tcp_retries2), so a change fenced by settle() cannot run after its
 * fence has gone.
 */
export const CHANGE_ID_TTL = 3600;
/** After a change got no answer, how long the node keeps asking Redis what became of it. */
export const SETTLE_WITHIN = 5;

/**
 * What a change did in Redis: certain ("applied", "not applied") or, when Redis did not
 * answer at all within SETTLE_WITHIN, "unknown" (it may still run; see settle()).
 */
export type Outcome = "applied" | "not applied" | "unknown";

/** This worker's change ids: 64 random bits once, the pid, and a serial. */
const ids = { seed: "", serial: 0 };

function newChangeId(): string {
  if (ids.seed === "") {
    const [f] = io.open("/dev/urandom", "rb");
    if (f !== undefined) {
      const bytes = (f as unknown as { read(this: unknown, n: number): string | undefined }).read(8);
      f.close();
      if (typeof bytes === "string") ids.seed = toHex(bytes);
    }
    if (ids.seed === "") ids.seed = string.format("%x", math.floor(ngx.now() * 1000));
  }
  ids.serial++;
  return `${ids.seed}.${ngx.worker.pid()}.${ids.serial}`;
}

/**
 * A change that got no answer (a read timeout, a connection lost after the send) may have
 * run, may run later (it can sit in Redis's socket buffer while Redis is busy; closing our
 * end does not take back what Redis already received), or may never run. This asks Redis,
 * on fresh connections and for at most SETTLE_WITHIN seconds, to settle it: SETTLE and the
 * change are scripts, each run wholly before or after the other, so either the change ran
 * first (SETTLE reads its version: "applied") or SETTLE fenced its id first and the change,
 * whenever it arrives, changes nothing ("not applied"). Which connection Redis reads first
 * does not matter. No answer at all: "unknown".
 */
function settle(id: string, why: string): LuaMultiReturn<[Outcome, number, string | undefined, string, boolean]> {
  const cfg = settings.cfg.redis!;
  ngx.update_time();
  const deadline = ngx.now() + SETTLE_WITHIN;
  let last = why;
  while (true) {
    const [red, err] = connect();
    if (red === undefined) {
      last = err!;
    } else {
      const left = math.max(0.001, math.min(cfg.read_timeout, deadline - ngx.now()));
      red.set_timeout(math.ceil(left * 1000));
      const [reply, e] = run(red, SETTLE, 2, key("change", id), key("version"), CHANGE_ID_TTL);
      if (!failed(red, reply)) {
        release(red);
        const [fate, now] = reply as unknown as [string, string];
        if (fate === "cancelled") return $multi("not applied", 0, `${why}; fenced afterwards, so it never runs`, id, false);
        // Applied, but while the node waited a later change may have replaced it.
        const version = tonumber(fate) ?? 0;
        return $multi("applied", version, undefined, id, version === tonumber(now));
      }
      last = `redis: ${e}`;
    }
    ngx.update_time();
    if (ngx.now() >= deadline) {
      return $multi("unknown", 0, `${why}; then no answer from Redis within ${SETTLE_WITHIN}s (${last})`, id, false);
    }
    ngx.sleep(0.1);
  }
}

/**
 * One attempt (read_timeout) to settle a change of unknown outcome: "applied", "not
 * applied" (fenced now or before), or undefined with the error when Redis did not answer.
 */
export function settleOnce(id: string): LuaMultiReturn<[Outcome | undefined, string | undefined]> {
  const [red, err] = connect();
  if (red === undefined) return $multi(undefined, err);
  const [reply, e] = run(red, SETTLE, 2, key("change", id), key("version"), CHANGE_ID_TTL);
  if (failed(red, reply)) return $multi(undefined, `redis: ${e}`);
  release(red);
  const [fate] = reply as unknown as [string, string];
  return $multi(fate === "cancelled" ? "not applied" : "applied", undefined);
}

/**
 * Writes a change for the whole fleet, under a fresh change id. `fence`: ids of this
 * node's earlier changes whose outcome was unknown; the script fences those that have
 * not run, so none can land after this one. Returns the outcome, the fleet's version
 * after the change (when applied), why it was not applied (or is unknown), the id, and
 * whether the change is still the fleet's latest (false when a settle found it replaced
 * by a later one: the node must not apply it locally over what the fleet says now).
 */
export function change(scope: string, mode: "paused" | "maintenance" | "", ttl: number, reason: string, fence: string[] = []):
  LuaMultiReturn<[Outcome, number, string | undefined, string, boolean]> {
  const id = newChangeId();
  const [red, err] = connect();
  if (red === undefined) return $multi("not applied", 0, err, id, false); // nothing was sent
  const args: (string | number)[] = [key("scope", scope), key("scopes"), key("version"), key("change", id)];
  for (const f of fence) args.push(key("change", f));
  const numKeys = args.length;
  for (const a of [mode, ttl, reason, scope, key(CHANNEL_SUFFIX), ngx.now(), CHANGE_ID_TTL]) args.push(a);
  const [reply, evalErr] = run(red, CHANGE, numKeys, ...args);
  if (reply === undefined) {
    // Sent, perhaps read by Redis, no answer: the one case whose outcome is open.
    red.close();
    return settle(id, `redis: ${evalErr}`);
  }
  // Redis answered an error: the script stopped before its first write (OOM, READONLY).
  if (failed(red, reply)) return $multi("not applied", 0, `redis: ${evalErr}`, id, false);
  release(red);
  const [first, version] = reply as unknown as [string, number | undefined];
  if (first === "cancelled" && version === undefined) return $multi("not applied", 0, "fenced before it ran", id, false);
  return $multi("applied", version ?? 0, undefined, id, true);
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
