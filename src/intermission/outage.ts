// Unplanned outages: nobody paused, yet the upstream stopped accepting connections (a
// crash, a restart, a deploy). With `outage_hold` on, a request that was never held and
// whose connection failed before a byte was sent enters its scope on this node into the
// mode "outage" (gate.retry): new requests are held at once without trying the upstream,
// one prober per scope and node connects to the failed address, and when it accepts the
// backlog is released exactly as after a resume (release.resumeLocked: in order, slow
// start, the retry lane, the ready probe if set). The state is node-local: it is never
// written to Redis, and the fleet's sync leaves a local outage alone.
//
//   running --connect failed--> outage --the address accepts--> draining | running
//   outage --pause/maintenance (operator)--> paused | maintenance: the prober stops
//
// Bounds: a request waits min(outage_hold, max_hold); once an outage is older than
// outage_hold, new requests get 503 + Retry-After at once (holdSeconds) until it ends,
// once this node's prober has seen it go on (a prober started anew has not: UNCONFIRMED).
import { ScopeKeys, zones, num, keysFor, NODE_SCOPE } from "./shm";
import { createLocked } from "./reclaim";
import { settings } from "./settings";
import { Mode, modeOf, writeMode } from "./mode";
import * as release from "./release";
import * as ready from "./ready";
import * as counters from "./counters";
import * as waiters from "./waiters";
import * as liveness from "./liveness";

/** State-zone key of the scope's prober claim (in the scope's own key space). */
function proberKey(keys: ScopeKeys): string {
  return `${keys.scope}|oprober`;
}
/** Seconds the prober's claim lives without a refresh (a claim whose pid reads alive but runs no prober: a reused pid). */
const PROBER_LEASE = 5;
/** The claim's value: a prober in a live worker, or in one that is exiting (a live worker takes it over). */
const LIVE = 1;
const EXITING = 2;
/**
 * Added to the claim's value until the prober's first round has failed. A prober started
 * (or taken over) by a request or a watcher has not tried the upstream yet: its outage
 * may be over already (the prober before it was lost with its worker, or stopped in a
 * worker that exited with nothing held), so nobody is answered at once on it (holdSeconds).
 */
const UNCONFIRMED = 10;
/** Pauses between connect attempts: 50 ms doubling to 500 ms (about two a second). */
const FIRST = 0.05;
const MAX = 0.5;
/** Connect timeout of one attempt (ms). */
const CONNECT_TIMEOUT = 500;

/** Whether `addr` ($upstream_addr) names an address the prober can connect to. */
export function probeable(addr: string | undefined): boolean {
  if (addr === undefined || addr === "") return false;
  return ready.addressesOf(addr).length > 0;
}

/**
 * Enters the outage (from running only; any other mode is left as it is: a pause or
 * maintenance already holds or answers, a release in progress has its own retry lane).
 * Returns the mode now, or undefined when the scope cannot be had (max_scopes, lock).
 */
export function enter(keys: ScopeKeys, addr: string): Mode | undefined {
  const [mode, lockErr] = release.withScopeLock(keys, (k) => {
    // Made here, under the lock (reclaim.ts), if it has no state.
    const [made, err] = createLocked(k, settings.cfg.max_scopes);
    if (!made) error(err!, 0);
    const m = modeOf(k);
    if (m !== "running") return m;
    const zone = zones.state;
    const now = ngx.now();
    const [okAddr] = zone.safe_set(k.outageAddr, addr);
    if (!okAddr) return m;
    zone.safe_set(k.since, now);
    zone.safe_set(k.until, 0);
    zone.safe_set(k.reason, "");
    const [ok] = writeMode(k, "running", "outage");
    if (!ok) return m;
    counters.count(k, "outages");
    ngx.log(ngx.NOTICE, `intermission: audit action=outage-start scope=${k.scope} upstream=${addr} outage_hold=${settings.cfg.outage_hold}`);
    return "outage" as Mode;
  });
  if (mode === undefined) {
    ngx.log(ngx.WARN, `intermission: no outage hold for scope ${keys.scope}: ${lockErr}`);
    return undefined;
  }
  if (mode === "outage") ensureProber(keys);
  return mode;
}

/** Seconds a new request waits for a prober's first round (one connect, 0.5 s at most, per address). */
const FIRST_ROUND = 1;

/**
 * How long a new request of the outage may be held: outage_hold while the outage is
 * younger; past it, 0 (answered 503 at once) once a prober on this node has seen it go on
 * (a round failed); while its prober has yet to try (started anew: UNCONFIRMED), the
 * first round's length, which ends the outage if the upstream is back.
 */
export function holdSeconds(keys: ScopeKeys): number {
  if (ngx.now() - num(zones.state, keys.since) < settings.cfg.outage_hold) return settings.cfg.outage_hold;
  const [held] = zones.state.get(proberKey(keys));
  return type(held) === "number" && (held as number) < UNCONFIRMED ? 0 : FIRST_ROUND;
}

/** An outage older than outage_hold, for a request whose own connection just failed: answered 503 at once. */
export function outlasted(keys: ScopeKeys): boolean {
  return ngx.now() - num(zones.state, keys.since) >= settings.cfg.outage_hold;
}

/** The failed address and how long the outage has lasted, for status. */
export function describe(keys: ScopeKeys): { upstream: string; seconds: number; fail_fast: boolean } {
  const [addr] = zones.state.get(keys.outageAddr);
  return {
    upstream: type(addr) === "string" ? (addr as string) : "",
    seconds: math.max(0, ngx.now() - num(zones.state, keys.since)),
    fail_fast: holdSeconds(keys) === 0,
  };
}

/**
 * Starts the scope's prober unless one runs on this node. Called at entry, by every
 * request that meets the outage and by the watcher of every worker holding requests of
 * the scope. The claim is a shared-dict add; a claim whose worker is gone (kill -9) or
 * exiting is taken over at once, by one worker only (an add of a takeover key named after
 * the holder's pid). An exiting worker starts nothing (it cannot start timers): its own
 * running prober, or a live worker's, covers the scope.
 */
export function ensureProber(keys: ScopeKeys): void {
  if (ngx.worker.exiting()) return;
  const st = zones.state;
  const key = proberKey(keys);
  const [held, holder] = st.get(key);
  if (held !== undefined) {
    const pid = holder as number | undefined;
    if ((held as number) % UNCONFIRMED !== EXITING && !liveness.gone(pid, ngx.now())) return;
    if (pid === liveness.me()) return;
    // One taker per holder: the others see the add fail.
    const [taker] = st.safe_add(`${key}|${pid ?? 0}`, true, PROBER_LEASE);
    if (!taker) return;
    const [set] = st.safe_set(key, LIVE + UNCONFIRMED, PROBER_LEASE, liveness.me());
    if (!set) return;
    ngx.log(ngx.NOTICE, `intermission: outage prober of scope ${keys.scope} taken over from worker ${pid ?? 0} (${(held as number) % UNCONFIRMED === EXITING ? "exiting" : "gone"})`);
  } else {
    const [mine] = st.safe_add(key, LIVE + UNCONFIRMED, PROBER_LEASE, liveness.me());
    if (!mine) return;
  }
  const [ok, err] = ngx.timer.at(0, prober, keys.scope);
  if (ok) return;
  st.delete(key);
  // Exiting since the test above: its running prober or a live worker covers the scope.
  if (ngx.worker.exiting()) return;
  ngx.log(ngx.ERR, `intermission: cannot start the outage prober of scope ${keys.scope}: ${err}`);
}

/** Whether this worker still holds the scope's prober claim. */
function claimed(keys: ScopeKeys): boolean {
  const [held, holder] = zones.state.get(proberKey(keys));
  return held !== undefined && holder === liveness.me();
}

/**
 * Whether an exiting worker's prober goes on: while requests of the scope are held on
 * this node (in this worker or another exiting one; a live worker's watcher takes the
 * claim over), and at most until the last request the outage held could still be held.
 */
function keepProbingWhileExiting(keys: ScopeKeys): boolean {
  if (release.heldNow(keys) <= 0) return false;
  const since = num(zones.state, keys.since);
  return ngx.now() < since + settings.cfg.outage_hold + settings.cfg.max_hold;
}

/** An address of the failed try accepts connections: the outage ends as a resume does. */
function finish(keys: ScopeKeys, where: string): boolean {
  const [ended] = release.withScopeLock(keys, (k) => {
    if (modeOf(k) !== "outage") return true;
    const now = ngx.now();
    // The node is paused (or in maintenance): a pause of default holds every request on
    // the node, so the outage's backlog waits for its resume (the prober looks again).
    if (k.scope !== NODE_SCOPE && release.nodeStopped(now)) return false;
    const lasted = now - num(zones.state, k.since);
    release.resumeLocked(k, now);
    counters.observeOutage(k, lasted);
    ngx.log(ngx.NOTICE, `intermission: audit action=outage-end scope=${k.scope} upstream=${where} seconds=${string.format("%.3f", lasted)}`);
    return true;
  });
  waiters.poke();
  return ended === true;
}

/**
 * Connects to every address of the failed try, each once a round, until one accepts (the
 * outage ends), the outage is settled otherwise, another worker took the claim over, or
 * this worker is exiting with nothing left to probe for (keepProbingWhileExiting).
 * (`premature` is true only for a timer that had not started when its worker began to
 * exit: it probes all the same.)
 */
function prober(this: void, _premature: boolean, scope: string): void {
  const keys = keysFor(scope);
  const [addr] = zones.state.get(keys.outageAddr);
  const where = type(addr) === "string" ? (addr as string) : "";
  const addresses = ready.addressesOf(where);
  let pause = FIRST;
  let mine = true;
  let confirmed = false;
  while (addresses.length > 0) {
    ngx.update_time();
    // A pause, maintenance or resume took the outage over: nothing left to probe for.
    if (modeOf(keys) !== "outage") break;
    if (!claimed(keys)) {
      mine = false; // taken over: the claim is another worker's now
      break;
    }
    const exiting = ngx.worker.exiting();
    if (exiting && !keepProbingWhileExiting(keys)) break;
    zones.state.safe_set(proberKey(keys), (exiting ? EXITING : LIVE) + (confirmed ? 0 : UNCONFIRMED), PROBER_LEASE, liveness.me());
    let open = false;
    for (const a of addresses) {
      if (ready.accepts(a, CONNECT_TIMEOUT)) {
        open = true;
        break;
      }
    }
    if (open) {
      ngx.update_time();
      if (finish(keys, where)) break;
      ngx.sleep(MAX); // held by the node's pause: look again
      continue;
    }
    counters.count(keys, "probe_failures");
    if (!confirmed) {
      confirmed = true; // from now on the outage fails fast past outage_hold
      zones.state.safe_set(proberKey(keys), exiting ? EXITING : LIVE, PROBER_LEASE, liveness.me());
    }
    ngx.sleep(pause);
    pause = math.min(pause * 2, MAX);
  }
  if (mine && claimed(keys)) {
    zones.state.delete(proberKey(keys));
    // Its claim kept the scope from being reclaimed (reclaim.ts): look again now it is gone.
    release.advance(keys);
  }
}

/** For the watcher (waiters.setProbe): the prober a scope whose requests this worker holds waits for. */
function keepProbers(this: void, keys: ScopeKeys, mode: Mode): void {
  if (mode === "outage") ensureProber(keys);
  else ready.ensureProbers(keys);
}

waiters.setProbe(keepProbers);
