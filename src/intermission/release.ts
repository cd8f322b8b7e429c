// The release protocol: tickets, claims, leases. One module, one state machine; its
// spin model is model/release.pml (npm test checks it).
//
// A held request takes a ticket t = incr(seq) and writes its deadline under w|t (no TTL:
// liveness comes from the deadline, fixed at issue, so nothing expires while a pause
// freezes the queue). The ticket is the request's place among the held: held now is the
// tickets issued minus the tickets decided (heldNow), so there is no second counter that
// a worker dying between two statements could leave wrong. Its fate is settled by one
// atomic add on its claim key c|t; the first writer wins and counts it `decided`:
//     lease number (>= 0)  granted by the advancer (0: granted outside the window)
//     "L"                  the request left first (timeout, abort, maintenance, killed)
//     "D"                  the advancer found it past deadline + GRACE: its worker is gone
// The advancer moves the head in ticket order under the scope's lock, which is a
// non-blocking add: whoever finds it taken bumps `dirty`, and the holder runs again,
// so no wake-up is lost and no phase ever waits (log and header_filter call it too).
//
// The window paces the backlog, the tickets up to `stop` (the tail at resume): each
// grant takes a lease l|g that comes back when the response starts (header_filter), when
// the request ends (log), or after release_lease seconds (long polls, streams, dead
// workers). Tickets issued after `stop` wait their turn but take no lease, and once the
// backlog is granted the scope runs again: steady traffic is never throttled by a drain.
// The window starts at 1 after each resume and doubles per success up to release_window;
// a gateway failure shrinks it to 1 and stops grants for a back-off (0.1 s doubling to 2 s).
//
// A worker killed outright (SIGKILL, OOM, segfault) leaves its tickets and leases behind.
// Each w|t and l|g carries its holder's pid in the shared-dict flags (liveness.ts): a
// ticket whose holder is gone is passed over as "D" when the head reaches it, never
// granted, and counted `aborted` (its request was counted held and will never say how
// it ended); a lease whose holder is gone comes back unused when the window is full,
// neither a success nor a failure for slow start. Within a second, not at deadline +
// GRACE or after release_lease.
//
// A lease out several times longer than the release's typical response start is
// long-lived (a long poll, a stream, a slow export) and frees its slot (freeLongLived):
//     "long"     a response started well since its grant: a success for slow start
//     "silent"   nothing answered since: a success for slow start too, but it spends one
//                of the release_window requests that may be out unanswered since the last
//                response start (`probes`), so a hung upstream (where every request looks
//                long-lived) meets release_window requests at most; with none left the
//                lease stays, and the window keeps release_window - probes of them
//     "expired"  out release_lease with nothing answered: freed, window back to 1
// Each silent free halves the threshold for the next (0.4 s, 0.2 s ... 0.02 s), so a run
// of long polls at the head passes within about 0.7 s; a response started resets both.
// A gateway failure leaves room for one request at a time and voids the evidence: no
// long-lived lease is freed early until a response starts well again.
//
// A scope that runs again with every ticket decided and no lease out is idle, and step()
// reclaims its state (reclaim.ts; its own model, model/reclaim.pml: release.pml's
// protocol runs within one incarnation of a scope). The one write here that takes no
// lock, a ticket's incr, goes through takeTicket(), which waits out a reclaim's seal or
// makes the scope again under its lock.
import { ScopeKeys, Lane, zones, num, FLEET_SHARE_KEY, scopeExists, keysFor, NODE_SCOPE } from "./shm";
import { createLocked, reclaimLocked, SEAL } from "./reclaim";
import { settings } from "./settings";
import { Mode, modeOf, writeMode } from "./mode";
import * as waiters from "./waiters";
import * as ready from "./ready";
import * as counters from "./counters";
import * as liveness from "./liveness";
import { logOnce } from "./burst";

const LEFT = "L";
const DEAD = "D";
/** Seconds past its deadline after which a ticket whose request never left is dead. */
const GRACE = 1;
/** Seconds a decided claim outlives its request's deadline, for a late reader. */
const CLAIM_SLACK = 60;
/** The scope lock's expiry: only a worker that crashed inside advance() leaves it set. */
const LOCK_TTL = 1;
/** A lease is settled by incr(-SETTLE): exactly one settler sees a value above SETTLED_BELOW. */
const SETTLE = 2 ** 50;
const SETTLED_BELOW = -(2 ** 50 + 2 ** 49);
/** How often a held request with no watcher in its worker looks for its turn. */
const UNWATCHED_POLL = 0.05;
const BACKOFF_FIRST = 0.1;
const BACKOFF_MAX = 2;
/**
 * Long-lived: out LONG_FACTOR times the typical response start, and LONG_FLOOR seconds at
 * least (also while no response has started since the resume), halved by each silent free
 * since the last response start, down to LONG_MIN. (release_window 1 is one request at a
 * time all the same: a silent free needs room for a second unanswered request.)
 */
const LONG_FACTOR = 4;
const LONG_FLOOR = 0.4;
const LONG_MIN = 0.02;

export type Outcome = "released" | "timeout" | "aborted" | "maintenance" | "error";

/** How a lease ends: the upstream answered, failed at the gateway, or it was never used. */
export type LeaseEnd = "success" | "failure" | "unused";

function tryLock(keys: ScopeKeys): boolean {
  const [ok] = zones.state.safe_add(keys.lock, true, LOCK_TTL);
  return ok;
}

/** Runs fn under the scope's lock, waiting for it (content and timer phases only). */
export function withScopeLock<T>(keys: ScopeKeys, fn: (this: void, keys: ScopeKeys) => T): LuaMultiReturn<[T | undefined, string | undefined]> {
  let waited = 0;
  let pause = 0.001;
  while (!tryLock(keys)) {
    if (waited >= 2) return $multi(undefined, `scope ${keys.scope} is locked`);
    ngx.sleep(pause);
    waited += pause;
    pause = math.min(pause * 2, 0.01);
  }
  const [ok, result] = pcall(fn, keys);
  zones.state.delete(keys.lock);
  if (!ok) return $multi(undefined, tostring(result));
  advance(keys);
  return $multi(result as T, undefined);
}

// ---- leases ---------------------------------------------------------------------------

/**
 * The largest window now: release_window, or in a fleet with fleet_release_window this
 * node's share of it (computed from the live heartbeats at each resume).
 */
export function windowLimit(): number {
  const cfg = settings.cfg;
  if (cfg.fleet_release_window === undefined) return cfg.release_window;
  const share = num(zones.state, FLEET_SHARE_KEY);
  return math.min(cfg.release_window, share > 0 ? share : cfg.fleet_release_window);
}

/**
 * How the advancer frees a long-lived lease (freeLongLived): "long" (the upstream answers
 * others meanwhile) and "silent" (nothing has, within the unanswered budget) count as a
 * success for slow start; "expired" (out release_lease, nothing answered) brings the
 * window back to 1.
 */
type SettleEnd = LeaseEnd | "long" | "silent" | "expired";

/** `answered`: the caller has just noted a response started well (okAt is set): no need to read it. */
function settleLease(keys: ScopeKeys, lease: number, end: SettleEnd, answered = false): boolean {
  const q = zones.queue;
  const st = zones.state;
  const leaseKey = keys.leasePrefix + lease;
  const [v] = q.incr(leaseKey, -SETTLE);
  if (v === undefined || v < SETTLED_BELOW) return false;
  q.delete(leaseKey);
  st.incr(keys.used, -1);
  if (end === "failure") {
    noteFailure(keys);
  } else if (end === "expired") {
    st.safe_set(keys.window, 1);
  } else if (end === "silent" || ((end === "success" || end === "long") && (answered || num(st, keys.okAt) > 0))) {
    // Grows only once a response has started well since the resume (a lease of the
    // previous release, answered before it, does not count: spin found it), or on a
    // silent free, which windowHasRoom() bounds by the unanswered budget instead.
    const window = math.max(num(st, keys.window), 1);
    const limit = windowLimit();
    if (window < limit) st.safe_set(keys.window, math.min(window * 2, limit));
    if (end !== "silent" && num(st, keys.backoffStep) > 0) st.safe_set(keys.backoffStep, 0);
  }
  return true;
}

/**
 * Runs `write` on the scope's state; a scope with none (reclaimed, or never stopped on
 * this node) is made first, under its lock, and `write` runs there: what it writes (a
 * back-off, a wait) keeps the scope from being reclaimed before the request's ticket
 * comes. Content and access phases only (the lock may be waited for).
 */
function withState(keys: ScopeKeys, write: (this: void, keys: ScopeKeys) => void): void {
  if (scopeExists(keys)) {
    write(keys);
    return;
  }
  const [, err] = withScopeLock(keys, (k) => {
    const [made, why] = createLocked(k, settings.cfg.max_scopes);
    if (!made) error(why!, 0);
    write(k);
    return true;
  });
  if (err !== undefined) logOnce(ngx.WARN, "state", `intermission: no back-off for scope ${keys.scope}: ${err}`);
}

/**
 * A failure of a request that held no lease (it went outside the window): back off all
 * the same. A scope with no state (reclaim.ts) is made for it if `canWait` (content
 * phase: a retry follows), else left alone (nothing to slow, no orphan keys).
 */
export function noteFailure(keys: ScopeKeys, canWait = false): void {
  if (!scopeExists(keys)) {
    if (canWait) withState(keys, failed);
    return;
  }
  failed(keys);
}

function failed(this: void, keys: ScopeKeys): void {
  const st = zones.state;
  const now = ngx.now();
  const step = math.min(math.max(num(st, keys.backoffStep) * 2, BACKOFF_FIRST), BACKOFF_MAX);
  st.safe_set(keys.backoffStep, step);
  st.safe_set(keys.backoffUntil, now + step);
  st.safe_set(keys.window, 1);
  // Until a response starts well: room for one request at a time (windowHasRoom), no
  // silent free (freeLongLived), and no lease is "long" on evidence from before it.
  st.safe_set(keys.probes, windowLimit() - 1);
  st.safe_set(keys.okAt, 0);
}

/**
 * Stops grants for `seconds` at least (more if the back-off already says so): a request
 * that failed at the upstream again spaces its next try, and, as the retry lane and the
 * queue keep their order, everyone behind it waits with it.
 */
export function backOffAtLeast(keys: ScopeKeys, seconds: number): void {
  const until = ngx.now() + seconds;
  withState(keys, (k) => {
    if (num(zones.state, k.backoffUntil) < until) zones.state.safe_set(k.backoffUntil, until);
  });
}

/**
 * Gives a lease back (header_filter, log, or a request that will not use it). Never yields.
 * `started`: seconds from its release to its response's start. A lease the advancer freed
 * as long-lived still reports how its response went: a success is the evidence that the
 * upstream answers, a gateway failure backs off as any other.
 */
export function returnLease(keys: ScopeKeys, lease: number, end: LeaseEnd, started?: number): void {
  if (lease <= 0) return;
  const answered = end === "success" && noteStarted(keys, started);
  if (settleLease(keys, lease, end, answered)) advance(keys);
  else if (end === "failure") noteFailure(keys);
}

// ---- long-lived leases (issue 23) -------------------------------------------------------

/** A response started well, `seconds` after its release: the upstream answers. False: the scope has no state (nothing noted). */
function noteStarted(keys: ScopeKeys, seconds: number | undefined): boolean {
  const st = zones.state;
  if (!scopeExists(keys)) return false; // reclaimed (reclaim.ts): its evidence went with it
  if (seconds !== undefined) {
    const typical = num(st, keys.typical);
    st.safe_set(keys.typical, typical > 0 ? typical * 0.75 + seconds * 0.25 : math.max(seconds, 0.001));
  }
  st.safe_set(keys.okAt, ngx.now());
  if (num(st, keys.probes) > 0) st.safe_set(keys.probes, 0);
  return true;
}

/**
 * Seconds after which a lease is long-lived: see the top of this file. Each silent free
 * since the last response start halves it (a run of long polls at the head passes in
 * about twice the first threshold), down to LONG_MIN.
 */
function longAfter(keys: ScopeKeys): number {
  const st = zones.state;
  const typical = num(st, keys.typical);
  const after = math.min(math.max(typical * LONG_FACTOR, LONG_FLOOR), settings.cfg.release_lease);
  const silent = num(st, keys.probes);
  return silent > 0 ? math.max(after / 2 ** math.min(silent, 30), math.min(LONG_MIN, after)) : after;
}

/**
 * How many more requests may be out unanswered: release_window minus the leases freed
 * silently since the last response start (a gateway failure leaves room for one).
 */
function unansweredRoom(keys: ScopeKeys): number {
  return math.max(windowLimit() - num(zones.state, keys.probes), 1);
}

/**
 * Frees lease g, granted at `granted` and out past longAfter(). If a response has started
 * well since it was granted, the upstream answers and this request is merely long: its
 * slot goes to the next, and slow start grows as on a success. If none has, these may be
 * long polls, or a hung upstream (it accepts and never answers, and then every request
 * looks long-lived): the lease is freed ("silent", slow start grows) only if the slot it
 * frees can be used, that is if fewer than release_window requests are out unanswered
 * since the last response start (its lease, the others, and those freed silently before,
 * `probes`). Otherwise it waits out release_lease ("expired"), and so do the younger ones:
 * a hung upstream meets release_window requests, then none until the leases expire.
 * False: it stays.
 */
function freeLongLived(keys: ScopeKeys, g: number, granted: number, expired: boolean): boolean {
  const st = zones.state;
  const evidence = num(st, keys.okAt) > granted;
  if (expired && !evidence) {
    settleLease(keys, g, "expired");
    return true;
  }
  // Merely long or silent, the request is still out unanswered: it counts against the
  // budget either way (an upstream that answered the requests before it and hangs now
  // would otherwise meet the leases granted before its last answer, then release_window
  // more: twice the window).
  const probes = num(st, keys.probes);
  if (num(st, keys.used) + probes < windowLimit()) {
    st.safe_set(keys.probes, probes + 1);
    settleLease(keys, g, evidence ? "long" : "silent");
    return true;
  }
  if (!expired) return false;
  settleLease(keys, g, "long"); // release_lease is its bound all the same
  return true;
}

/**
 * Leases are granted in order and all last release_lease: the oldest expire first, and
 * become long-lived first (freeLongLived; its evidence, a response started since the
 * grant, can only be missing for the younger ones too).
 */

/** Per worker and scope: when this worker last looked for leases of dead holders. */
const deadScanAt: { [scope: string]: number | undefined } = {};
/** How often a worker whose window is full looks for leases of dead holders. */
const DEAD_SCAN_EVERY = 0.2;

/**
 * Leases held by workers that are gone (killed while their request was on its way
 * upstream, or before it read its grant) come back now, unused. Looked for only when the
 * window is full, at most every DEAD_SCAN_EVERY per worker and scope.
 */
function reclaimDead(keys: ScopeKeys, now: number): void {
  const last = deadScanAt[keys.scope];
  if (last !== undefined && now - last < DEAD_SCAN_EVERY) return;
  deadScanAt[keys.scope] = now;
  const st = zones.state;
  const q = zones.queue;
  const newest = num(st, keys.leaseSeq);
  for (let g = num(st, keys.leaseOldest) + 1; g <= newest; g++) {
    const [v, holder] = q.get(keys.leasePrefix + g);
    if (v !== undefined && (v as number) >= 0 && liveness.gone(holder as number | undefined, now)) {
      settleLease(keys, g, "unused");
    }
  }
}

/** Leases are granted in order and all last release_lease: the oldest expire first. */
function reclaimExpired(keys: ScopeKeys, now: number): void {
  const st = zones.state;
  let oldest = num(st, keys.leaseOldest);
  const last = num(st, keys.leaseSeq);
  const start = oldest;
  const lease = settings.cfg.release_lease;
  let after: number | undefined;
  while (oldest < last) {
    const [v] = zones.queue.get(keys.leasePrefix + (oldest + 1));
    if (v !== undefined && (v as number) >= 0) {
      const granted = (v as number) - lease;
      // Younger than any threshold can be (most calls, while a healthy release runs):
      // no need to read what longAfter() reads.
      if (now - granted < math.min(LONG_MIN, lease)) break;
      after ??= longAfter(keys);
      if (now - granted < after) break;
      if (!freeLongLived(keys, oldest + 1, granted, (v as number) <= now)) break;
    }
    oldest++;
  }
  if (oldest !== start) st.safe_set(keys.leaseOldest, oldest);
}

/**
 * Whether a paced ticket may be granted now. Expired and long-lived leases were freed by
 * step() at this same `now` before it granted anything (the leases granted since are
 * younger than any threshold), so only the leases of dead holders are looked for here.
 */
function windowHasRoom(keys: ScopeKeys, now: number): boolean {
  const st = zones.state;
  if (now < num(st, keys.backoffUntil) || now < num(st, keys.readyUntil)) return false;
  const window = math.min(math.max(num(st, keys.window), 1), unansweredRoom(keys));
  if (num(st, keys.used) < window) return true;
  reclaimDead(keys, now);
  return num(st, keys.used) < window;
}

// ---- the advancer ---------------------------------------------------------------------

/**
 * Per worker and lane: the first ticket seen issued but unwritten, since when, and the
 * lane's tail at that moment: every ticket up to it was issued before `since`, so once
 * GRACE has passed, each of them still unwritten is gone, without a grace of its own
 * (a run of them, after a full zone or a crash, costs one GRACE, not one per ticket).
 */
const unwritten: { [laneSeq: string]: { ticket: number; since: number; upto: number } | undefined } = {};

/** Grants ticket t; false when the queue zone is full (the head must not move). */
function grant(keys: ScopeKeys, lane: Lane, t: number, paced: boolean, deadline: number, holder: number, now: number): boolean {
  const st = zones.state;
  const q = zones.queue;
  // Looked at again right before the grant: an advancer stalled past its lock's expiry
  // must not grant into a pause that another one saw begin.
  const mode = modeOf(keys);
  if (mode === "paused" || mode === "maintenance" || mode === "outage") return false;
  let lease = 0;
  if (paced) {
    // The lease exists before the claim names it, so its holder can always return it.
    const [n] = st.incr(keys.leaseSeq, 1);
    // Its holder's pid in the flags: a lease of a worker that is gone comes back early.
    const [ok] = q.safe_add(keys.leasePrefix + n!, now + settings.cfg.release_lease, 0, holder);
    if (ok) {
      lease = n!;
      st.incr(keys.used, 1);
    }
  }
  const claimKey = lane.claimPrefix + t;
  const claimTtl = math.max(deadline - now, 0) + CLAIM_SLACK;
  let [won, err] = q.safe_add(claimKey, lease, claimTtl);
  if (!won && err !== "exists") {
    // The queue zone is full (of held tickets, say, right after a resume): the ticket's
    // deadline key, deleted after every grant anyway, makes room for its claim first.
    q.delete(lane.ticketPrefix + t);
    [won, err] = q.safe_add(claimKey, lease, claimTtl);
    if (!won && err !== "exists") q.safe_add(lane.ticketPrefix + t, deadline, 0, holder); // as it was
  }
  if (won) {
    st.incr(keys.decided, 1);
    return true;
  }
  if (lease > 0) settleLease(keys, lease, "unused");
  if (err !== "exists") {
    logOnce(ngx.ERR, "grant", `intermission: cannot grant ticket ${t} of scope ${keys.scope}: ${err} (the queue zone is full: lua_shared_dict ${settings.cfg.dict}_queue is too small); the release waits`);
    return false;
  }
  q.delete(claimKey); // it left before its turn ("L"): pass it over
  return true;
}

/**
 * Counts a ticket decided that has no claim of its own request: unless a credit says
 * that a refused request (its ticket never written) counted itself without writing its
 * claim (the queue zone was full), then the credit is spent instead. Which claimless
 * ticket spends a credit does not matter: each is passed by the head once and spends or
 * counts once, so `decided` comes out right once the head has passed them all.
 */
function countPassedOver(keys: ScopeKeys): void {
  const st = zones.state;
  if (num(st, keys.unclaimed) > 0) {
    const [left] = st.incr(keys.unclaimed, -1);
    if (left !== undefined && left >= 0) return;
    if (left !== undefined) st.incr(keys.unclaimed, 1); // spent by another advancer meanwhile
  }
  st.incr(keys.decided, 1);
}

/**
 * Claims a ticket on behalf of a request that is gone: the claimer counts it decided.
 * `holderGone`: its worker is known dead, so its request never ends by itself: it counts
 * as aborted (its client lost the connection with the worker), which keeps the counters'
 * identity. A ticket passed over only for its deadline may belong to a worker that
 * stalled: that request queues again and ends with an outcome of its own.
 * False: the queue zone has no room for the "D", so the head waits here. Passing it
 * without one would let a request that is still there (its worker stalled) leave with
 * an "L" of its own later and count it a second time (the spin model found that).
 */
function passOverDead(keys: ScopeKeys, lane: Lane, t: number, holderGone: boolean): boolean {
  const q = zones.queue;
  const claimKey = lane.claimPrefix + t;
  let [ok, err] = q.safe_add(claimKey, DEAD, CLAIM_SLACK);
  if (!ok && err !== "exists") {
    q.delete(lane.ticketPrefix + t); // its deadline key makes room; unwritten, it is passed later
    [ok, err] = q.safe_add(claimKey, DEAD, CLAIM_SLACK);
  }
  if (!ok && err === "exists") {
    q.delete(claimKey); // it left after all, and counted itself
    return true;
  }
  if (!ok) {
    logOnce(ngx.ERR, "pass", `intermission: cannot pass over ticket ${t} of scope ${keys.scope}: ${err} (the queue zone is full: lua_shared_dict ${settings.cfg.dict}_queue is too small); the release waits`);
    return false;
  }
  countPassedOver(keys);
  if (holderGone) counters.count(keys, "aborted");
  return true;
}

/** Decides ticket t, the next after the head. False: not decidable yet, stop here. */
function decide(keys: ScopeKeys, lane: Lane, t: number, paced: boolean, now: number): boolean {
  const q = zones.queue;
  const ticketKey = lane.ticketPrefix + t;
  const claimKey = lane.claimPrefix + t;
  const [deadline, holder] = q.get(ticketKey);
  const [claim] = q.get(claimKey);
  if (claim !== undefined) {
    // It left before its turn ("L"): pass it over at once, whatever the window or the
    // back-off say, so that a queue of abandoned tickets ends with the last of them. A
    // grant or "D" here was decided by an advancer that died before it moved the head:
    // that decision stands (its request reads it), only the head moves on.
    if (claim === LEFT) q.delete(claimKey);
    if (deadline !== undefined) q.delete(ticketKey);
    return true;
  }
  if (deadline === undefined) {
    // Issued, not yet written: its request is between two statements, or its worker
    // died right there. Wait for it, a grace period at most.
    const seen = unwritten[lane.seq];
    if (seen === undefined || t < seen.ticket || t > seen.upto) {
      unwritten[lane.seq] = { ticket: t, since: now, upto: num(zones.state, lane.seq) };
      return false;
    }
    if (now - seen.since < GRACE) return false;
    return passOverDead(keys, lane, t, false);
  }
  // Its worker is gone (killed): pass it over now, whatever the window says; never grant
  // it a lease that nobody would give back.
  const holderGone = liveness.gone(holder as number | undefined, now);
  if (holderGone || (deadline as number) + GRACE < now) {
    if (!passOverDead(keys, lane, t, holderGone)) return false;
  } else if ((paced && !windowHasRoom(keys, now)) || !grant(keys, lane, t, paced, deadline as number, holder as number, now)) {
    return false; // only a grant waits for room in the window
  }
  q.delete(ticketKey);
  return true;
}

/** Caller holds the lock. Starts releasing the backlog, or runs at once if there is none. */
export function resumeLocked(keys: ScopeKeys, now: number): Mode {
  const st = zones.state;
  const previous = modeOf(keys);
  if (previous === "running" || previous === "draining") return previous;
  const seq = num(st, keys.main.seq);
  st.safe_set(keys.stop, seq);
  st.safe_set(keys.window, 1);
  // A resume keeps what the last release learnt while any of it still holds: leases out,
  // requests out unanswered since the last response start (freed silently), a gateway
  // failure not yet followed by a good answer (one at a time, the back-off's next step),
  // or the back-off itself. However long the pause, and whatever ended meanwhile (the
  // back-off, a lease, a client): else a pause and resume would send a failing or hung
  // upstream a fresh window. (Two black-box reviews found each of these.)
  // (Nothing learnt holding means no back-off step and none running: only the evidence is reset.)
  const learnt = num(st, keys.used) > 0 || num(st, keys.probes) > 0 || num(st, keys.backoffStep) > 0 ||
    now < num(st, keys.backoffUntil);
  if (!learnt) resetLongLived(keys);
  zones.counters.set(keys.lastPause, now - num(st, keys.since));
  st.safe_set(keys.since, now);
  st.safe_set(keys.until, 0);
  st.safe_set(keys.reason, "");
  const next: Mode = pending(keys) ? "draining" : "running";
  if (next === "draining" && settings.cfg.ready_probe !== undefined) ready.startWaiting(keys, now);
  writeMode(keys, previous, next);
  return next;
}

/** The evidence of long-lived leases is measured afresh at each resume. */
function resetLongLived(keys: ScopeKeys): void {
  const st = zones.state;
  st.safe_set(keys.okAt, 0);
  st.safe_set(keys.typical, 0);
  st.safe_set(keys.probes, 0);
}

function pending(keys: ScopeKeys): boolean {
  const st = zones.state;
  return num(st, keys.main.head) < num(st, keys.main.seq) || num(st, keys.retry.head) < num(st, keys.retry.seq);
}

/** Decides tickets of one lane while the window lets it. False: stopped before its end. */
function drainLane(keys: ScopeKeys, lane: Lane, stop: number, now: number): boolean {
  const st = zones.state;
  const seq = num(st, lane.seq);
  let head = num(st, lane.head);
  let finished = true;
  while (head < seq) {
    if (!decide(keys, lane, head + 1, head + 1 <= stop, now)) {
      finished = false;
      break;
    }
    head++;
    // Written at once: an advancer that dies after this leaves nothing decided twice.
    st.safe_set(lane.head, head);
  }
  return finished;
}

/** persist.ts, injected to keep the modules acyclic: whether the state file carries an expired pause on. */
const expiryCheck: { fn?: (this: void, keys: ScopeKeys, now: number) => boolean } = {};

export function setExpiryCheck(fn: (this: void, keys: ScopeKeys, now: number) => boolean): void {
  expiryCheck.fn = fn;
}

/**
 * Whether default (the node) is paused or in maintenance now (an expired pause no longer
 * counts): a scope's outage does not end meanwhile (outage.ts), so that its held requests
 * wait for the node's resume.
 */
export function nodeStopped(now: number): boolean {
  const node = keysFor(NODE_SCOPE);
  const mode = modeOf(node);
  if (mode !== "paused" && mode !== "maintenance") return false;
  const until = num(zones.state, node.until);
  return until === 0 || now < until;
}

/** Caller holds the lock: grants what may go now, in ticket order. */
function step(keys: ScopeKeys): void {
  const st = zones.state;
  const now = ngx.now();
  let mode = modeOf(keys);
  // An unplanned outage grants nothing: its prober ends it (outage.ts) as a resume does.
  if (mode === "outage") return;
  if (mode === "paused" || mode === "maintenance") {
    const until = num(st, keys.until);
    if (until === 0 || now < until) return;
    // A refresh through another master (binary upgrade) is in the state file: persist.ts.
    if (expiryCheck.fn !== undefined && expiryCheck.fn(keys, now)) return;
    ngx.log(ngx.NOTICE, `intermission: audit action=auto-resume scope=${keys.scope} reason=ttl-expired was=${mode}`);
    mode = resumeLocked(keys, now);
  }
  // Leases that expired or are long-lived come back on time, even with no ticket waiting
  // for room; once per step, before any grant (windowHasRoom relies on it).
  if (num(st, keys.used) > 0) reclaimExpired(keys, now);
  // Retries first (every one of them paced), then the main queue in arrival order.
  if (!drainLane(keys, keys.retry, math.huge, now)) return;
  const done = drainLane(keys, keys.main, num(st, keys.stop), now);
  // The backlog is granted, and so is everything that queued behind it: run again.
  if (mode === "draining" && done) writeMode(keys, "draining", "running");
  // Running with nothing held, queued or leased: its state goes (reclaim.ts).
  if (done && (mode === "running" || mode === "draining")) reclaimLocked(keys, now);
}

/** Grants whatever may go now. Never yields: safe in every phase. */
export function advance(keys: ScopeKeys): void {
  const st = zones.state;
  st.incr(keys.dirty, 1);
  while (tryLock(keys)) {
    const [seen] = st.get(keys.dirty);
    const [ok, err] = pcall(step, keys);
    st.delete(keys.lock);
    if (!ok) {
      ngx.log(ngx.ERR, `intermission: release of scope ${keys.scope} failed: ${tostring(err)}`);
      break;
    }
    if (st.get(keys.dirty)[0] === seen) break;
  }
  // A waiter of this worker whose ticket the head has passed (granted here or by another
  // worker) is woken now, not at the watcher's next poll: a grant made in a log() or
  // header_filter() would otherwise wait up to poll_interval, its window slot idle.
  waiters.wakeDue(keys);
}

// ---- a held request -------------------------------------------------------------------

/**
 * Gives up ticket t. "left": out of the queue, it must not go upstream. A number: it had
 * been granted that lease first. "dead": it was passed over as gone. `written`: its
 * deadline key w|t was written (it was held), so the advancer may be granting it now.
 */
function leave(keys: ScopeKeys, lane: Lane, t: number, written: boolean): number | "left" | "dead" {
  const q = zones.queue;
  const claimKey = lane.claimPrefix + t;
  let [ok, err] = q.safe_add(claimKey, LEFT);
  if (!ok && err !== "exists" && written) {
    // The queue zone is full. This ticket's own deadline key makes room for its claim;
    // without it the advancer sees the ticket as unwritten until the claim lands.
    q.delete(lane.ticketPrefix + t);
    [ok, err] = q.safe_add(claimKey, LEFT);
  }
  if (ok || err !== "exists") {
    if (ok) {
      zones.state.incr(keys.decided, 1);
    } else {
      logOnce(ngx.ERR, "leave", `intermission: cannot record that ticket ${t} of scope ${keys.scope} left: ${err} (the queue zone is full: lua_shared_dict ${settings.cfg.dict}_queue is too small)`);
      if (!written) {
        // Never written, so never granted: it counts itself decided now (a refusal must
        // not count as held) and leaves a credit, which the advancer spends when it
        // passes a claimless ticket (countPassedOver) instead of counting it a second
        // time. The credit goes first: a pass in between spends it.
        zones.state.incr(keys.unclaimed, 1);
        zones.state.incr(keys.decided, 1);
      }
      // Written: a grant may be landing now (this ticket's deadline was read), and only
      // the claim's writer may count it. It stays counted held until the advancer passes
      // it (it has no deadline key now: once the grace is over) or a grant wins it; the
      // request is gone either way, and a lease granted to it comes back on expiry.
    }
    advance(keys);
    return "left";
  }
  const [claim] = q.get(claimKey);
  q.delete(claimKey);
  return type(claim) === "number" ? (claim as number) : "dead";
}

/** log() for a request killed while held (worker shutdown): give its place back. */
export function abandon(w: waiters.Waiter): void {
  waiters.done(w);
  const result = leave(w.keys, w.lane, w.ticket, true);
  if (type(result) === "number") returnLease(w.keys, result as number, "unused");
}

/**
 * Requests held now: tickets issued and not yet decided. `decided` is read first, so a
 * decision made while the tickets are read can only make this too high, never too low
 * (every decided ticket was issued before it was decided): max_held is never exceeded.
 */
export function heldNow(keys: ScopeKeys): number {
  const st = zones.state;
  const decided = num(st, keys.decided);
  return math.max(0, num(st, keys.main.seq) + num(st, keys.retry.seq) - decided);
}

/** max_held are held already: a request is refused before it takes anything. */
export function atCapacity(keys: ScopeKeys): boolean {
  if (heldNow(keys) < settings.cfg.max_held) return false;
  // Full: a killed worker's held requests must not keep the survivors' out.
  return !leaveForDead(keys) || heldNow(keys) >= settings.cfg.max_held;
}

/** Why admit() refused: max_held were held, or the queue zone had no room for the ticket. */
export type Refusal = "held" | "full";

/** Gives up a ticket that was never handed to hold(): as any leave ("L"). */
function giveUp(keys: ScopeKeys, lane: Lane, t: number): void {
  const result = leave(keys, lane, t, false);
  if (type(result) === "number") returnLease(keys, result as number, "unused");
}

/**
 * Writes ticket t's deadline (w|t), its worker's pid in the flags (a ticket of a worker
 * that is gone is passed over). False: the queue zone is full; the ticket is given up
 * ("L") and the request is to be answered 503, never forwarded.
 */
function writeTicket(keys: ScopeKeys, lane: Lane, t: number, deadline: number, again: string): boolean {
  const [written, err] = zones.queue.safe_add(lane.ticketPrefix + t, deadline, 0, liveness.me());
  if (written) return true;
  logOnce(ngx.ERR, "ticket", `intermission: cannot hold a request in scope ${keys.scope}${again}: ${err} (the queue zone is full: lua_shared_dict ${settings.cfg.dict}_queue is too small); answering 503`);
  giveUp(keys, lane, t);
  return false;
}

/** How long a ticket taker waits at most for a reclaim that sealed its lane (reclaim.ts) to end. */
const SEALED_WAIT = LOCK_TTL;

/**
 * Takes ticket t = incr(seq) in `lane`, whatever a reclaim of the scope (reclaim.ts) is
 * doing: a sealed lane (t <= 0) is waited out: its ticket stands once the seal is undone
 * in the same incarnation (t + SEAL); if the scope is gone (or was never made), it is
 * made again and the ticket taken under its lock, where no reclaim runs. Access phase
 * only (it may sleep, for a moment). Undefined: no ticket (max_scopes met, the lock, the
 * zone full); the caller logs nothing more than its refusal.
 */
function takeTicket(keys: ScopeKeys, lane: Lane): number | undefined {
  const st = zones.state;
  const [mark] = st.get(keys.made);
  if (mark !== undefined) {
    const [t] = st.incr(lane.seq, 1);
    if (t !== undefined && t > 0) return t;
    if (t !== undefined) {
      // Sealed by a reclaim that holds the lock now and does not yield: a moment.
      let waited = 0;
      while (waited < SEALED_WAIT) {
        const [v] = st.get(lane.seq);
        if (v === undefined) break; // reclaimed: the ticket is void
        if ((v as number) > 0) {
          // Unsealed: the ticket stands if the scope is the one it was taken in.
          if (st.get(keys.made)[0] === mark) return t + SEAL;
          break;
        }
        ngx.sleep(0.001);
        waited += 0.001;
      }
    }
  }
  return takeTicketMaking(keys, lane);
}

/**
 * takeTicket() for a scope that has no state: made under its lock, the ticket taken
 * there. A function of its own: the closure would stop every trace through takeTicket()
 * (see liveness.ts on UCLO).
 */
function takeTicketMaking(keys: ScopeKeys, lane: Lane): number | undefined {
  const [taken, err] = withScopeLock(keys, (k) => {
    const [made, why] = createLocked(k, settings.cfg.max_scopes);
    if (!made) return why!;
    const [n, incrErr] = zones.state.incr(lane.seq, 1);
    return n ?? `cannot take a ticket: ${incrErr}`;
  });
  if (type(taken) === "number") return taken as number;
  logOnce(ngx.WARN, "ticket-scope", `intermission: cannot hold a request in scope ${keys.scope}: ${tostring(taken ?? err)}; answering 503`);
  return undefined;
}

/**
 * Takes a ticket in `lane` and writes its deadline (w|t): from the incr on the request
 * counts as held, and nothing is left to undo if its worker dies (an unwritten ticket is
 * passed over as dead after the grace, which counts it decided).
 *
 * A refusal costs the queue nothing that outlives the request: max_held is checked before
 * the ticket is taken, so a storm of refused requests takes no ticket, writes no claim and
 * leaves nothing for the head to pass. Only the race after the incr (several workers past
 * the check at once) gives a ticket up again ("L", passed over by the head later): at
 * most one per worker and freed place. A ticket whose deadline cannot be written (the
 * queue zone is full) is given up too: the request is answered 503, never forwarded.
 */
export function admit(keys: ScopeKeys, lane: Lane, deadline: number, capacityChecked = false): LuaMultiReturn<[number | undefined, Refusal | undefined]> {
  // `capacityChecked`: the caller has just asked atCapacity() (gate, before it made anything for the request).
  if (!capacityChecked && atCapacity(keys)) return $multi(undefined, "held");
  const t = takeTicket(keys, lane);
  if (t === undefined) return $multi(undefined, "full");
  const held = heldNow(keys);
  if (held > settings.cfg.max_held) {
    // Never written, so never granted: leave() wins the claim ("L") and counts it decided.
    giveUp(keys, lane, t);
    return $multi(undefined, "held");
  }
  if (!writeTicket(keys, lane, t, deadline, "")) return $multi(undefined, "full");
  if (held > num(zones.counters, keys.lastQueue) && modeOf(keys) === "paused") zones.counters.set(keys.lastQueue, held);
  return $multi(t, undefined);
}

/** Per worker and scope: when this worker last looked for held tickets of dead workers. */
const deadHeldScanAt: { [scope: string]: number | undefined } = {};
const DEAD_HELD_SCAN_EVERY = 1;

/**
 * The queue is full (a request would be refused): the tickets of workers that are gone
 * leave it now, with "L" as their requests would have had their workers lived (counted
 * decided, and aborted), instead of counting towards max_held until the head reaches
 * them after the resume. Looks at every undecided ticket, so at most once a second per
 * worker and scope, and only when full. True: some left.
 */
function leaveForDead(keys: ScopeKeys): boolean {
  ngx.update_time();
  const now = ngx.now();
  const last = deadHeldScanAt[keys.scope];
  if (last !== undefined && now - last < DEAD_HELD_SCAN_EVERY) return false;
  deadHeldScanAt[keys.scope] = now;
  const st = zones.state;
  const q = zones.queue;
  let freed = false;
  for (const lane of [keys.retry, keys.main]) {
    const seq = num(st, lane.seq);
    for (let t = num(st, lane.head) + 1; t <= seq; t++) {
      const [deadline, holder] = q.get(lane.ticketPrefix + t);
      if (deadline !== undefined && liveness.gone(holder as number | undefined, now)) {
        const [ok] = q.safe_add(lane.claimPrefix + t, LEFT);
        if (ok) {
          st.incr(keys.decided, 1);
          counters.count(keys, "aborted");
          freed = true;
        }
      }
    }
  }
  return freed;
}

/**
 * A grant met at or after the request's deadline (found there, or while leaving) while
 * the scope is stopped again, with on_timeout = "reject": its lease goes back unused and
 * the request times out, as it would have had the grant come a moment later.
 */
function refusedAsLate(keys: ScopeKeys, deadline: number): boolean {
  if (settings.cfg.on_timeout !== "reject") return false;
  ngx.update_time();
  if (ngx.now() < deadline) return false;
  const mode = modeOf(keys);
  return mode === "paused" || mode === "maintenance" || mode === "outage";
}

/**
 * Holds an admitted request (ticket t from admit, its deadline written) in a lane: "main" for a new request,
 * "retry" for a released one whose upstream connection failed, until its ticket is
 * granted, its deadline passes, its client goes away or the scope enters maintenance.
 * Returns the outcome and, when released, the lease the caller returns once the response
 * starts. `label` names it in the log.
 */
export function hold(keys: ScopeKeys, lane: Lane, ticket: number, deadline: number, w: waiters.Waiter, label: string): LuaMultiReturn<[Outcome, number]> {
  const q = zones.queue;
  let t = ticket;
  while (true) {
    // admit() wrote the first ticket's deadline, with its worker's pid in the flags (a
    // ticket of a worker that is gone is passed over); a ticket taken again is written here.
    if (t !== ticket && !writeTicket(keys, lane, t, deadline, " again")) return $multi("error", 0);
    const watched = waiters.track(w, keys, lane, t, deadline);
    const laneNote = lane.name === "retry" ? " lane=retry" : "";
    // Pieces, not one string: ngx.log joins them in C (see gate's leave line).
    ngx.log(ngx.NOTICE, "intermission: hold ", label, " scope=", keys.scope, " ticket=", t, laneNote, " state=", modeOf(keys));
    advance(keys);

    let outcome: Outcome = "timeout";
    while (true) {
      const [claim] = q.get(lane.claimPrefix + t);
      if (type(claim) === "number") {
        q.delete(lane.claimPrefix + t);
        waiters.done(w);
        // Found only at its deadline (it was not woken), with the scope stopped again.
        if (refusedAsLate(keys, deadline)) {
          returnLease(keys, claim as number, "unused");
          return $multi("timeout", 0);
        }
        return $multi("released", claim as number);
      }
      if (claim === DEAD) break;
      if (w.aborted) { outcome = "aborted"; break; }
      if (modeOf(keys) === "maintenance") { outcome = "maintenance"; break; }
      ngx.update_time();
      const remaining = deadline - ngx.now();
      if (remaining <= 0) break;
      if (watched) {
        w.sema.wait(remaining);
      } else {
        w.sema.wait(math.min(remaining, UNWATCHED_POLL));
        advance(keys);
      }
    }

    waiters.done(w);
    const result = leave(keys, lane, t, true);
    if (result === "left") return $multi(outcome, 0);
    if (result === "dead") {
      // Passed over while still here (its worker stalled): queue again if time is left.
      // The dead ticket was counted decided; the new one counts this request held again.
      q.delete(lane.ticketPrefix + t); // written after the advancer had passed it
      ngx.update_time();
      if (outcome === "timeout" && ngx.now() < deadline) {
        const next = takeTicket(keys, lane);
        if (next === undefined) return $multi("error", 0);
        t = next;
        continue;
      }
      return $multi(outcome, 0);
    }
    // Granted just as it was leaving. A grant is honoured, except for a request that
    // gave up, or one at or past its deadline while the scope is stopped again (whether
    // it left for its deadline or for maintenance: the same rule as a grant found above).
    const lease = result as number;
    if (outcome === "aborted" || refusedAsLate(keys, deadline)) {
      returnLease(keys, lease, "unused");
      return $multi(outcome, 0);
    }
    return $multi("released", lease);
  }
}

waiters.setAdvance(advance);

/** Tickets not yet decided (some of them may have left and wait to be passed over). */
export function queued(keys: ScopeKeys): number {
  const st = zones.state;
  return math.max(0, num(st, keys.main.seq) - num(st, keys.main.head)) + math.max(0, num(st, keys.retry.seq) - num(st, keys.retry.head));
}

/** The release's progress, for status and metrics. */
export function progress(keys: ScopeKeys): { window: number; leases: number; backlog: number; backoff: number } {
  const st = zones.state;
  return {
    window: math.max(num(st, keys.window), 1),
    leases: num(st, keys.used),
    backlog: math.max(0, num(st, keys.stop) - num(st, keys.main.head)),
    backoff: math.max(0, num(st, keys.backoffUntil) - ngx.now()),
  };
}
