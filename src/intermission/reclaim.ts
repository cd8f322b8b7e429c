// A scope's state is made when it is first stopped (or first holds a request) and
// reclaimed when it is idle again, so that max_scopes bounds the LIVE scopes, not every
// scope a node has ever seen (issue 23, item 3).
//
// Both happen only under the scope's lock (release.ts), so a creation and a reclaim never
// interleave, and neither interleaves with a transition or a release step. Idle is:
// running (no mode key: not paused, maintenance, outage, draining), every ticket of both
// lanes decided (issued == head == decided), no credit owed, no lease out, no back-off,
// no ready or connect wait, no prober working for it. A paused scope, or one in
// maintenance, is never reclaimed.
//
// The one writer that takes no lock is a request taking a ticket (release.takeTicket:
// incr of a lane's seq). A reclaim first SEALS both lanes' seq by incr(-SEAL): the value
// it gets back is exactly the one it found idle, or a ticket was taken in between (and
// the scope is not idle: the seal is undone and nothing else changes). A ticket taken
// after the seal is <= 0; its taker waits until the key is gone (reclaimed: it makes the
// scope again, under the lock) or positive again (the seal undone: its ticket stands,
// t + SEAL). So no request's ticket is ever lost in a reclaim, nor counted twice.
//
// Ticket numbers are never issued twice: a decided claim (c|t in the queue zone) lives
// past its request's deadline for a late reader, so a scope made again must not hand out
// the same t. The reclaim raises the node's SEQ_BASE_KEY above every ticket and lease
// number the scope issued; a scope starts its sequences there. The mark's value is that
// base: each incarnation of a scope has its own, so a ticket taker can tell whether the
// scope it sealed is still the one it took its ticket in.
//
// What is left outside the state zone: the queue zone holds nothing of an idle scope but
// decided claims, each with its TTL and read (and deleted) by its own request; the
// counters zone keeps the scope's counters (statistics, LRU like every counter).
import { ScopeKeys, zones, num, knownScopes, keysFor, SCOPE_COUNT_KEY, SEQ_BASE_KEY, sequenceKeys, plainNumericKeys, stateKeys, proberKeys } from "./shm";

/** incr(seq, -SEAL) seals a lane: far beyond any ticket number (< 1e14, printed exactly), within 2^53. */
export const SEAL = 2 ** 51;
/** The scope lock's key expiry (release.ts LOCK_TTL). */
const LOCK_TTL = 1;
/** How often at most a worker sweeps every scope for idle ones when the bound is met. */
const SWEEP_EVERY = 1;

/**
 * Whether the scope's state can go now: the tickets issued in each lane as the check
 * read them (the seal compares with exactly these: a seq read again could include a
 * ticket taken after the check, and the seal would then hide it: model/reclaim.pml,
 * BUG_RESEEN), or undefined. Caller holds the scope's lock.
 */
function idle(keys: ScopeKeys, now: number): LuaMultiReturn<[number | undefined, number]> {
  const st = zones.state;
  if (st.get(keys.mode)[0] !== undefined) return $multi(undefined, 0);
  const mainSeq = num(st, keys.main.seq);
  const retrySeq = num(st, keys.retry.seq);
  if (mainSeq !== num(st, keys.main.head) || retrySeq !== num(st, keys.retry.head)) return $multi(undefined, 0);
  // Read after the tickets: a leave() between its claim and its count shows here.
  if (num(st, keys.decided) < mainSeq + retrySeq) return $multi(undefined, 0);
  if (num(st, keys.unclaimed) !== 0 || num(st, keys.used) !== 0) return $multi(undefined, 0);
  if (num(st, keys.backoffUntil) > now || num(st, keys.readyUntil) > now) return $multi(undefined, 0);
  for (const k of proberKeys(keys)) if (st.get(k)[0] !== undefined) return $multi(undefined, 0);
  return $multi(mainSeq, retrySeq);
}

/** Seals a lane's ticket sequence found at `seen`. False: a ticket was taken meanwhile (undone). */
function seal(key: string, seen: number): boolean {
  const st = zones.state;
  const [v] = st.incr(key, -SEAL);
  if (v === undefined) return false;
  if (v === seen - SEAL) return true;
  st.incr(key, SEAL);
  return false;
}

/**
 * Deletes the scope's state if it is idle. Caller holds the scope's lock (it stays: the
 * caller deletes it). Never yields. True: reclaimed.
 */
export function reclaimLocked(keys: ScopeKeys, now: number): boolean {
  const st = zones.state;
  if (st.get(keys.made)[0] === undefined) return false;
  const [mainSeq, retrySeq] = idle(keys, now);
  if (mainSeq === undefined) return false;
  if (!seal(keys.main.seq, mainSeq)) return false;
  if (!seal(keys.retry.seq, retrySeq)) {
    st.incr(keys.main.seq, SEAL);
    return false;
  }
  // The mark first: from here the scope is not listed, and a ticket taker that finds it
  // gone (or another incarnation's) knows its sealed ticket is void.
  st.delete(keys.made);
  st.incr(SCOPE_COUNT_KEY, -1);
  // Above every number issued: tickets of both lanes and leases (an overshoot by a
  // concurrent reclaim of another scope only raises it further, which is as good).
  const high = math.max(mainSeq, retrySeq, num(st, keys.leaseSeq)) + 1;
  const base = num(st, SEQ_BASE_KEY);
  if (base < high) st.incr(SEQ_BASE_KEY, high - base);
  // The seqs last: a ticket taker waits for them to go.
  for (const k of stateKeys(keys)) {
    if (k !== keys.main.seq && k !== keys.retry.seq) st.delete(k);
  }
  st.delete(keys.main.seq);
  st.delete(keys.retry.seq);
  return true;
}

/**
 * Makes the scope's state unless it has some, within max_scopes (meeting the bound, it
 * sweeps the idle scopes first). Caller holds the scope's lock, or is setup() in the
 * master (no worker yet). The numeric keys that a write outside the lock may have made
 * (a ready wait, a back-off) keep their values; the sequences start at the node's base.
 */
export function createLocked(keys: ScopeKeys, maxScopes: number): LuaMultiReturn<[boolean, string | undefined]> {
  const zone = zones.state;
  if (zone.get(keys.made)[0] !== undefined) return $multi(true, undefined);
  zone.safe_add(SCOPE_COUNT_KEY, 0);
  let [count, err] = zone.incr(SCOPE_COUNT_KEY, 1);
  if (count === undefined) return $multi(false, `cannot count scopes: ${err}`);
  if (count > maxScopes) {
    zone.incr(SCOPE_COUNT_KEY, -1);
    if (sweep(keys.scope) === 0) return $multi(false, tooMany(maxScopes));
    [count, err] = zone.incr(SCOPE_COUNT_KEY, 1);
    if (count === undefined) return $multi(false, `cannot count scopes: ${err}`);
    if (count > maxScopes) {
      zone.incr(SCOPE_COUNT_KEY, -1);
      return $multi(false, tooMany(maxScopes));
    }
  }
  zone.safe_add(SEQ_BASE_KEY, 0);
  const base = num(zone, SEQ_BASE_KEY);
  const fail = (why: string): LuaMultiReturn<[boolean, string | undefined]> => {
    zone.incr(SCOPE_COUNT_KEY, -1);
    return $multi(false, `cannot create scope ${keys.scope}: ${why}`);
  };
  for (const k of sequenceKeys(keys)) {
    const [ok, setErr] = zone.safe_set(k, base);
    if (!ok) return fail(setErr!);
  }
  const [okDecided, decidedErr] = zone.safe_set(keys.decided, 2 * base);
  if (!okDecided) return fail(decidedErr!);
  for (const k of plainNumericKeys(keys)) {
    const [ok, addErr] = zone.safe_add(k, 0);
    if (!ok && addErr !== "exists") return fail(addErr!);
  }
  // The base is this incarnation's mark (see the top of this file); 0 reads as a number too.
  const [added, markErr] = zone.safe_add(keys.made, base);
  if (!added) return fail(markErr!);
  return $multi(true, undefined);
}

function tooMany(maxScopes: number): string {
  return `too many scopes: this node keeps at most max_scopes = ${maxScopes} scopes that are stopped, holding or releasing (idle ones are reclaimed)`;
}

/** Per worker: when this worker last swept. */
let sweptAt = -math.huge;

/**
 * Reclaims every idle scope whose lock it can take at once (never waits: the caller may
 * hold `except`'s lock). At most every SWEEP_EVERY per worker: a storm of refused new
 * scopes at a bound of live ones costs one scan a second. Returns how many went.
 */
export function sweep(except?: string): number {
  ngx.update_time();
  const now = ngx.now();
  if (now - sweptAt < SWEEP_EVERY) return 0;
  sweptAt = now;
  const st = zones.state;
  let reclaimed = 0;
  for (const scope of knownScopes()) {
    if (scope !== except) {
      const keys = keysFor(scope);
      const [locked] = st.safe_add(keys.lock, true, LOCK_TTL);
      if (locked) {
        const [ok, gone] = pcall(reclaimLocked, keys, now);
        st.delete(keys.lock);
        if (!ok) ngx.log(ngx.ERR, `intermission: reclaim of scope ${scope} failed: ${tostring(gone)}`);
        else if (gone) reclaimed++;
      }
    }
  }
  if (reclaimed > 0) ngx.log(ngx.INFO, `intermission: reclaimed ${reclaimed} idle scope(s) at the max_scopes bound`);
  return reclaimed;
}
