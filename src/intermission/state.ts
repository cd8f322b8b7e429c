// Per-scope mode and its transitions.
//
//   running --pause--> paused --resume--> draining --(queue empty)--> running
//   any --maintenance--> maintenance --resume--> draining/running
//
// "draining" is running with a queue still being released: new requests queue behind
// the held ones so nothing jumps the line. Transitions take the node lock and keep the
// global BUSY_KEY count of scopes that are not running, which is all the hot path reads.
// Expired pauses (TTL) and finished drains are settled lazily by whoever looks next
// (a request, a worker's watcher, the control API), so no timer runs for them.
import { ScopeKeys, zones, num, BUSY_KEY, markScope } from "./shm";
import { lock, unlock } from "./lock";
import * as queue from "./queue";

export type Mode = "running" | "paused" | "maintenance" | "draining";

export interface Snapshot {
  mode: Mode;
  since: number;
  until: number;
  reason: string;
}

export interface Change {
  previous: Mode;
  mode: Mode;
  /** The scope was already in the requested state; only TTL/reason were refreshed. */
  already: boolean;
  snapshot: Snapshot;
}

/** Called after every transition, in the worker that made it (to wake its watcher). */
export const listeners: { changed?: (this: void, keys: ScopeKeys) => void } = {};

export function modeOf(keys: ScopeKeys): Mode {
  const [m] = zones.state.get(keys.mode);
  return m === undefined ? "running" : (m as Mode);
}

export function snapshot(keys: ScopeKeys): Snapshot {
  const zone = zones.state;
  const [reason] = zone.get(keys.reason);
  return {
    mode: modeOf(keys),
    since: num(zone, keys.since),
    until: num(zone, keys.until),
    reason: type(reason) === "string" ? (reason as string) : "",
  };
}

/** Writes the mode and keeps the busy count right. Caller holds the lock. */
function writeMode(keys: ScopeKeys, from: Mode, to: Mode): void {
  const zone = zones.state;
  if (to === "running") zone.delete(keys.mode);
  else zone.set(keys.mode, to);
  if (from === "running" && to !== "running") {
    zone.incr(BUSY_KEY, 1, 0);
  } else if (from !== "running" && to === "running") {
    const [left] = zone.incr(BUSY_KEY, -1, 0);
    if (left !== undefined && left <= 0) zone.delete(BUSY_KEY);
  }
}

function withLock<T>(fn: (this: void) => T): LuaMultiReturn<[T | undefined, string | undefined]> {
  const [token, err] = lock();
  if (token === undefined) return $multi(undefined, err);
  const [ok, result] = pcall(fn);
  unlock(token);
  if (!ok) return $multi(undefined, tostring(result));
  return $multi(result as T, undefined);
}

function notify(keys: ScopeKeys): void {
  const changed = listeners.changed;
  if (changed !== undefined) changed(keys);
}

/**
 * Enters "paused" (hold new requests) or "maintenance" (answer 503; held requests too).
 * Doing it again refreshes the TTL and reason and reports `already`. ttl 0 = no expiry.
 */
function stop(keys: ScopeKeys, mode: "paused" | "maintenance", ttl: number, reason: string): LuaMultiReturn<[Change | undefined, string | undefined]> {
  markScope(keys.scope);
  const [change, err] = withLock(() => {
    const zone = zones.state;
    const previous = modeOf(keys);
    const now = ngx.now();
    if (previous !== mode) zone.set(keys.since, now);
    zone.set(keys.until, ttl > 0 ? now + ttl : 0);
    zone.set(keys.reason, reason);
    writeMode(keys, previous, mode);
    return { previous, mode, already: previous === mode, snapshot: snapshot(keys) };
  });
  if (change !== undefined) notify(keys);
  return $multi(change, err);
}

export function pause(keys: ScopeKeys, ttl: number, reason: string): LuaMultiReturn<[Change | undefined, string | undefined]> {
  return stop(keys, "paused", ttl, reason);
}

export function maintenance(keys: ScopeKeys, ttl: number, reason: string): LuaMultiReturn<[Change | undefined, string | undefined]> {
  return stop(keys, "maintenance", ttl, reason);
}

/** Caller holds the lock. Starts the release of the queue (or goes straight to running). */
function resumeLocked(keys: ScopeKeys): Change {
  const zone = zones.state;
  const previous = modeOf(keys);
  if (previous === "running" || previous === "draining") {
    return { previous, mode: previous, already: true, snapshot: snapshot(keys) };
  }
  zone.incr(keys.releaseGen, 1, 0);
  zone.set(keys.since, ngx.now());
  zone.set(keys.until, 0);
  zone.set(keys.reason, "");
  const next: Mode = queue.waiting(keys) > 0 ? "draining" : "running";
  writeMode(keys, previous, next);
  return { previous, mode: next, already: false, snapshot: snapshot(keys) };
}

/** Release held requests in arrival order; also ends maintenance. */
export function resume(keys: ScopeKeys): LuaMultiReturn<[Change | undefined, string | undefined]> {
  markScope(keys.scope);
  const [change, err] = withLock(() => resumeLocked(keys));
  if (change !== undefined && !change.already) {
    queue.advance(keys);
    notify(keys);
  }
  return $multi(change, err);
}

/**
 * The mode as it is now, settling what time or the queue has decided: an expired
 * pause resumes, a finished drain becomes running. May take the lock (yields) only
 * when something must change.
 */
export function settle(keys: ScopeKeys): Mode {
  const zone = zones.state;
  const mode = modeOf(keys);
  if (mode === "paused" || mode === "maintenance") {
    const until = num(zone, keys.until);
    if (until > 0 && ngx.now() >= until) {
      const [change, err] = withLock(() => {
        // Look again under the lock: a pause may have been renewed meanwhile.
        const renewed = num(zones.state, keys.until);
        if (modeOf(keys) !== mode || renewed === 0 || ngx.now() < renewed) return undefined;
        return resumeLocked(keys);
      });
      if (change !== undefined && !change.already) {
        ngx.log(ngx.NOTICE, `intermission: audit action=auto-resume scope=${keys.scope} reason=ttl-expired was=${mode}`);
        queue.advance(keys);
        notify(keys);
      } else if (err !== undefined) {
        ngx.log(ngx.ERR, `intermission: cannot resume expired ${mode} of scope ${keys.scope}: ${err}`);
      }
      return modeOf(keys);
    }
    return mode;
  }
  if (mode === "draining" && queue.waiting(keys) <= 0) {
    withLock(() => {
      if (modeOf(keys) === "draining" && queue.waiting(keys) <= 0) writeMode(keys, "draining", "running");
    });
    return modeOf(keys);
  }
  return mode;
}
