// Requests passed to the upstream and not yet finished, for this whole node.
//
// Counting in the shared dict would cost two writes per request on the hot path, so
// each worker counts in a Lua number and publishes it under its own key only when it
// must. The one figure drain needs exactly is zero, so the rule is: a worker never shows
// 0 while it has a request in flight (it publishes on the way up from 0, before the
// request is forwarded). Every other publish is deferred to a one-shot timer, at most
// PUBLISH_AFTER later: once its count reached 0, or moved by FLUSH_EVERY since the last
// publish. At one connection every request crosses 0 and back, and two shared-dict
// writes per request were most of the hot path's cost; the timer runs at most once per
// PUBLISH_AFTER in a busy worker, and never while the worker is idle.
//
// Keys are per worker pid, so the workers of a reload never overwrite each other. A
// worker killed outright (SIGKILL, OOM, segfault) leaves its key behind with the count it
// last published: total() asks the kernel whether each key's worker is still alive
// (liveness.ts, kill(pid, 0)) and drops the key of one that is gone, so its requests,
// lost with their connections, stop counting at the next status or drain. The hour's
// expiry is the backstop (a pid reused by another process of our user reads as alive).
// They start with "#", which no scope name can (shm.ts): the scope "inflight" is summed by no one.
import { zones } from "./shm";
import * as liveness from "./liveness";

const FLUSH_EVERY = 8;
/** Seconds after which a worker's count, once it reached 0 or moved, is published. */
const PUBLISH_AFTER = 0.2;
const KEY_PREFIX = "#inflight|";
/** Workers of 0.2.0 and earlier (an old generation during a reload): "inflight|<pid>", digits only. */
const LEGACY_PATTERN = "^inflight|%d+$";
const KEY_TTL = 3600;

let here = 0;
/** What this worker last published. */
let published = 0;
let pending = false;
let key = "";

function publish(): void {
  if (key === "") key = KEY_PREFIX + ngx.worker.pid();
  const [ok, err] = zones.state.safe_set(key, here, KEY_TTL);
  if (ok) published = here;
  else ngx.log(ngx.ERR, `intermission: cannot publish this worker's in-flight count: ${err}`);
}

function flush(this: void): void {
  pending = false;
  if (here !== published) publish();
}

/** Publishes within PUBLISH_AFTER. The timer also runs (premature) when the worker exits. */
function publishSoon(): void {
  if (pending) return;
  const [ok] = ngx.timer.at(PUBLISH_AFTER, flush);
  if (ok === undefined) publish(); // none to be had (exiting, too many timers): now
  else pending = true;
}

/** Writes this worker's key at start, so that no later publish needs memory. */
export function init(): void {
  publish();
}

/** A request is passed to the upstream. */
export function enter(): void {
  here++;
  if (published === 0) publish();
  else if (here - published >= FLUSH_EVERY) publishSoon();
}

/** A request finished (log phase). Never below zero: see the README on pairing. */
export function leave(): void {
  if (here <= 0) return;
  here--;
  if (here === 0 ? published !== 0 : published - here >= FLUSH_EVERY) publishSoon();
}

/**
 * leave() for a request of the control path (the control request itself, counted by
 * server-level hooks): its 0 is published at once, so other workers' status and drain
 * do not count it for the next PUBLISH_AFTER.
 */
export function leaveNow(): void {
  leave();
  if (here === 0 && published !== 0) publish();
}

/**
 * The node's total: this worker's own count, exact, and the others' as published. Scans
 * the state zone: control path only. (Reading its own key instead would count the
 * control request itself, whose 0 is not published yet.)
 */
export function total(): number {
  const zone = zones.state;
  const prefixLength = KEY_PREFIX.length;
  // This worker's exact count is published as it is read, so that a 0 said here is the
  // 0 every other worker says next (not, for up to PUBLISH_AFTER, this worker's older 1).
  if (key === "") key = KEY_PREFIX + ngx.worker.pid();
  if (published !== here) publish();
  let sum = here;
  const now = ngx.now();
  for (const k of zone.get_keys(0)) {
    if (k !== key && (string.sub(k, 1, prefixLength) === KEY_PREFIX || string.match(k, LEGACY_PATTERN)[0] !== undefined)) {
      const [v] = zone.get(k);
      if (type(v) === "number" && (v as number) !== 0) {
        if (liveness.gone(tonumber(string.match(k, "(%d+)$")[0]), now)) zone.delete(k);
        else sum += v as number;
      }
    }
  }
  return sum;
}
