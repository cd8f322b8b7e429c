// The access and log hooks.
//
// Running (the hot path): one shared-dict read of the busy count and a per-worker
// in-flight count; no ngx.var read, no allocation. Only when some scope is not
// running does a request take the slow path below, which may hold it.
import { zones, keysFor, ScopeKeys } from "./shm";
import * as inflight from "./inflight";
import * as fleet from "./fleet/sync";
import { settings } from "./settings";
import * as state from "./state";
import * as queue from "./queue";
import * as waiters from "./waiters";
import * as counters from "./counters";
import { unavailable } from "./respond";

const ngxVar = ngx.var;
const DEFAULT_SCOPE = "default";
const CTX_RECORD = "intermission";
const CTX_WAITER = "intermission_waiter";

/** What log() must undo for a request that took the slow path. */
interface Record {
  keys: ScopeKeys;
  /** Passed to the upstream (counted in flight). */
  forwarded: boolean;
  /** Release generation of the window slot this request holds; 0 = none. */
  releaseGen: number;
}

/** Requests in this worker with a Record not yet seen by log(); 0 keeps log() off ngx.ctx. */
let pendingRecords = 0;

/** $intermission_scope, else the seed's $app_name, else "default". */
export function scopeOf(): string {
  const scope = ngxVar.intermission_scope;
  if (scope !== undefined && scope !== "") return scope;
  const app = ngxVar.app_name;
  if (app !== undefined && app !== "") return app;
  return DEFAULT_SCOPE;
}

/** Whether log() must look for a Record (some request of this worker took the slow path). */
export function recordsPending(): boolean {
  return pendingRecords > 0;
}

/** The log hook for when records are pending: settles this request's record, if any. */
export function settleRecord(): void {
  const ctx = ngx.ctx;
  const record = ctx[CTX_RECORD] as Record | undefined;
  if (record === undefined) return inflight.leave();
  ctx[CTX_RECORD] = undefined;
  pendingRecords--;
  if (record.forwarded) inflight.leave();
  if (record.releaseGen > 0) {
    queue.releaseSlot(record.keys, record.releaseGen);
    waiters.poke();
  }
}

function remember(keys: ScopeKeys, forwarded: boolean, releaseGen: number): void {
  const record: Record = { keys, forwarded, releaseGen };
  ngx.ctx[CTX_RECORD] = record;
  pendingRecords++;
  if (forwarded) inflight.enter();
}

function alwaysPasses(): boolean {
  const cfg = settings.cfg;
  const uri = ngxVar.uri;
  if (uri !== undefined) {
    for (const path of cfg.health_check_paths) if (uri === path) return true;
    const locationPath = ngxVar.intermission_health_check_path;
    if (locationPath !== undefined && locationPath !== "" && uri === locationPath) return true;
  }
  const pattern = ngxVar.intermission_privileged_user_agent ?? cfg.privileged_user_agent;
  if (pattern !== undefined && pattern !== "") {
    const ua = ngxVar.http_user_agent;
    if (ua !== undefined) {
      const [from, , err] = ngx.re.find(ua, pattern, "jo");
      if (err !== undefined) ngx.log(ngx.ERR, `intermission: bad privileged user agent pattern: ${err}`);
      if (from !== undefined) return true;
    }
  }
  return false;
}

/** Seconds this location may hold a request: $intermission_max_time, else max_hold. */
function maxHoldHere(): number {
  const v = ngxVar.intermission_max_time;
  if (v !== undefined) {
    const n = tonumber(v);
    if (n !== undefined && n > 0) return n;
  }
  return settings.cfg.max_hold;
}

function onAbort(this: void): void {
  const w = ngx.ctx[CTX_WAITER] as waiters.Waiter | undefined;
  if (w !== undefined) waiters.abort(w);
}

function logExit(requestId: string, keys: ScopeKeys, waited: number, outcome: string): void {
  ngx.log(ngx.NOTICE, `intermission: leave request_id=${requestId} scope=${keys.scope} waited=${string.format("%.3f", waited)}s outcome=${outcome}`);
}

/** Holds the request until its turn, max_hold, an abort or maintenance. */
function hold(keys: ScopeKeys, mode: state.Mode): void {
  const cfg = settings.cfg;
  const zone = zones.state;

  const [heldNow] = zone.incr(keys.held, 1, 0);
  if (heldNow === undefined || heldNow > cfg.max_held) {
    zone.incr(keys.held, -1, 0);
    counters.count(keys, "rejected");
    remember(keys, false, 0);
    ngx.log(ngx.WARN, `intermission: queue full, rejected request_id=${ngxVar.request_id} scope=${keys.scope} max_held=${cfg.max_held}`);
    return unavailable("full", cfg.retry_after, "");
  }

  const [ticket, issueErr] = queue.issue(keys);
  let w: waiters.Waiter | undefined;
  let enqueueErr = issueErr;
  if (ticket !== undefined) [w, enqueueErr] = waiters.enqueue(keys, ticket);
  if (w === undefined) {
    // Fail open, as the seed did: a request we cannot hold safely goes through.
    zone.incr(keys.held, -1, 0);
    if (ticket !== undefined) queue.leave(keys, ticket);
    ngx.log(ngx.ERR, `intermission: cannot hold request, passing it: ${enqueueErr}`);
    remember(keys, true, 0);
    return;
  }

  const requestId = ngxVar.request_id ?? "-";
  const started = ngx.now();
  counters.count(keys, "held");
  ngx.log(ngx.NOTICE, `intermission: hold request_id=${requestId} scope=${keys.scope} ticket=${ticket!} state=${mode}`);

  ngx.ctx[CTX_WAITER] = w;
  const [abortOk, abortErr] = ngx.on_abort(onAbort);
  if (abortOk === undefined && abortErr !== "duplicate call") {
    ngx.log(ngx.INFO, `intermission: client aborts not detected while held: ${abortErr}`);
  }

  // While draining, the window may have room right now.
  if (mode !== "paused") {
    queue.advance(keys);
    const claim = queue.claimOf(keys, ticket!);
    if (type(claim) === "number") {
      w.outcome = "released";
      w.releaseGen = claim as number;
    }
  }

  const deadline = started + maxHoldHere();
  while (w.outcome === undefined) {
    ngx.update_time();
    const remaining = deadline - ngx.now();
    if (remaining <= 0) break;
    w.sema.wait(remaining);
  }
  waiters.finish(w);
  ngx.ctx[CTX_WAITER] = undefined;
  zone.incr(keys.held, -1, 0);
  ngx.update_time();
  const waited = ngx.now() - started;
  counters.observeHold(keys, waited);

  let outcome: string = w.outcome ?? "timeout";
  let releaseGen = w.releaseGen;
  if (outcome !== "released") {
    const [result, gen] = queue.leave(keys, ticket!);
    if (result === "granted") {
      if (outcome === "timeout") {
        // Its turn came just as time ran out: let it go.
        outcome = "released";
        releaseGen = gen;
      } else {
        queue.releaseSlot(keys, gen);
        waiters.poke();
      }
    }
  }

  logExit(requestId, keys, waited, outcome);
  if (outcome === "released") {
    counters.count(keys, "released");
    remember(keys, true, releaseGen);
    return;
  }
  if (outcome === "aborted") {
    counters.count(keys, "aborted");
    remember(keys, false, 0);
    return ngx.exit(499);
  }
  if (outcome === "maintenance") {
    counters.count(keys, "rejected");
    remember(keys, false, 0);
    return unavailable("maintenance", cfg.retry_after, state.snapshot(keys).reason);
  }
  counters.count(keys, "timed_out");
  if (cfg.on_timeout === "pass") {
    counters.count(keys, "passed");
    remember(keys, true, 0);
    return;
  }
  remember(keys, false, 0);
  return unavailable("timeout", cfg.retry_after, "");
}

/** The access hook once some scope is not running. */
export function gate(): void {
  if (settings.cfg.store === "redis") fleet.awaitFirstSync();
  const keys = keysFor(scopeOf());
  const mode = state.settle(keys);
  if (mode === "running") return remember(keys, true, 0);
  if (alwaysPasses()) return remember(keys, true, 0);
  if (mode === "maintenance") {
    counters.count(keys, "rejected");
    remember(keys, false, 0);
    return unavailable("maintenance", settings.cfg.retry_after, state.snapshot(keys).reason);
  }
  return hold(keys, mode);
}
