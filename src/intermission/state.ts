// Per-scope transitions asked for by the control API or the fleet: pause, maintenance,
// resume. Each runs under the scope's lock (release.ts), the same lock the advancer
// takes, so a transition and a release step never interleave. Expired pauses and
// finished drains are settled by the advancer, which every waiting worker's watcher,
// every held request and every control call runs: no timer runs for them.
import { ScopeKeys, zones, num, scopeExists } from "./shm";
import { createLocked } from "./reclaim";
import { settings } from "./settings";
import { Mode, modeOf, writeMode } from "./mode";
import * as release from "./release";
import * as waiters from "./waiters";
import * as persist from "./persist";

export type { Mode };
export { modeOf };

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
  /** The state file could not be rewritten (persist.save): what happened to it. */
  stateFileError?: string;
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

/**
 * After every transition, in the worker that made it: its watcher posts the waiters the
 * change lets go now, instead of at its next look.
 */
function notify(_keys: ScopeKeys): void {
  waiters.poke();
}

type Transition = LuaMultiReturn<[Change | undefined, string | undefined]>;

/**
 * Runs fn under the scope's lock. `create`: the scope's state is made there first if it
 * has none (max_scopes applies; reclaim.ts makes and reclaims only under the lock);
 * otherwise a scope with no state (never made, or reclaimed) is running and fn is not run.
 */
function transition(keys: ScopeKeys, create: boolean, fn: (this: void, keys: ScopeKeys) => Change): Transition {
  const [change, lockErr] = release.withScopeLock(keys, (k) => {
    if (!create) return scopeExists(k) ? fn(k) : running();
    const [made, err] = createLocked(k, settings.cfg.max_scopes);
    if (!made) error(err!, 0);
    return fn(k);
  });
  if (change !== undefined) {
    notify(keys);
    // The pauses in force outlive the shared dicts (a binary upgrade): persist.ts.
    const fileErr = persist.save();
    if (fileErr !== undefined) change.stateFileError = fileErr;
  }
  return $multi(change, lockErr);
}

/**
 * Enters "paused" (hold new requests) or "maintenance" (answer 503; held requests too).
 * Doing it again refreshes the TTL and reason and reports `already`. ttl 0 = no expiry.
 */
function stop(keys: ScopeKeys, mode: "paused" | "maintenance", ttl: number, reason: string): Transition {
  return transition(keys, true, (k) => {
    const zone = zones.state;
    const previous = modeOf(k);
    const now = ngx.now();
    if (previous !== mode) zone.safe_set(k.since, now);
    zone.safe_set(k.until, ttl > 0 ? now + ttl : 0);
    zone.safe_set(k.reason, reason);
    writeMode(k, previous, mode);
    return { previous, mode, already: previous === mode, snapshot: snapshot(k) };
  });
}

export function pause(keys: ScopeKeys, ttl: number, reason: string): Transition {
  return stop(keys, "paused", ttl, reason);
}

export function maintenance(keys: ScopeKeys, ttl: number, reason: string): Transition {
  return stop(keys, "maintenance", ttl, reason);
}

/** What a resume of a scope with no state answers: it runs, as a scope never seen does. */
function running(): Change {
  const snap: Snapshot = { mode: "running", since: 0, until: 0, reason: "" };
  return { previous: "running", mode: "running", already: true, snapshot: snap };
}

/** Release held requests in arrival order; also ends maintenance. */
export function resume(keys: ScopeKeys): Transition {
  if (!scopeExists(keys)) {
    // Never paused here, or reclaimed: nothing to release, and no reason to create it.
    return $multi(running(), undefined);
  }
  return transition(keys, false, (k) => {
    const previous = modeOf(k);
    const mode = release.resumeLocked(k, ngx.now());
    return { previous, mode, already: previous === "running" || previous === "draining", snapshot: snapshot(k) };
  });
}

/**
 * The mode as it is now, settling what time has decided (an expired pause resumes).
 * Never yields.
 */
export function settle(keys: ScopeKeys): Mode {
  const mode = modeOf(keys);
  if (mode === "paused" || mode === "maintenance") {
    const until = num(zones.state, keys.until);
    if (until > 0 && ngx.now() >= until) {
      release.advance(keys);
      notify(keys);
      return modeOf(keys);
    }
  }
  return mode;
}
