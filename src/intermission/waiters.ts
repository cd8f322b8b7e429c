// This worker's held requests, and the one watcher that wakes them.
//
// Each held request sleeps on its own ngx.semaphore and reads its own fate (release.ts)
// when woken. One watcher per worker, an ngx.timer light thread, exists only while this
// worker holds requests. Its own events wake it at once (its semaphore is posted by every
// transition in this worker: a resume, a maintenance, a pause that expires); otherwise it
// looks every poll_interval for what other workers changed in the shared dict. It
// advances each scope it holds (that is also how an unattended pause expires on time),
// makes sure that a scope in outage has its prober on this node (outage.ts), then posts
// the waiters whose tickets the head has passed (granted or not, whatever the mode: a
// grant is never left sleeping) and, in maintenance, every waiter of the scope.
//
// A worker that is its nginx's only one, with every scope it holds for paused, has no
// other worker to look for: nothing moves the head of a paused scope but a transition,
// and each transition here posts the watcher. It then sleeps until the earliest pause
// expiry, QUIET_WAIT at most (which bounds what an old worker during a reload could change
// unseen). A hundred nodes on one host holding through a pause would otherwise wake 500
// times a second each, for nothing.
import * as semaphore from "ngx.semaphore";
import { ScopeKeys, Lane, zones, num } from "./shm";
import { settings } from "./settings";
import { Mode, modeOf } from "./mode";

export interface Waiter {
  keys: ScopeKeys;
  lane: Lane;
  ticket: number;
  deadline: number;
  sema: NgxSemaphore;
  /** Set by ngx.on_abort. */
  aborted: boolean;
  /** The request is not waiting (any more); the watcher drops it. */
  done: boolean;
}

interface LocalQueue {
  keys: ScopeKeys;
  lane: Lane;
  items: (Waiter | undefined)[];
  /** The ticket each item was listed under: a waiter that queued again is listed anew. */
  tickets: number[];
  first: number;
  last: number;
}

/** How long past its deadline a waiter may stay listed: beyond that its coroutine is gone. */
const STALE_AFTER = 1;
const SWEEP_EVERY = 1;
/** The longest a watcher sleeps unposted while every scope it holds for is paused (one worker). */
const QUIET_WAIT = 0.1;

const localQueues: { [scope: string]: LocalQueue | undefined } = {};
const watch = {
  running: false,
  waiting: 0,
  sema: undefined as NgxSemaphore | undefined,
  lastSweep: 0,
  /** release.advance, injected to keep the modules acyclic. */
  advance: undefined as ((this: void, keys: ScopeKeys) => void) | undefined,
  /** outage.keepProbers, injected to keep the modules acyclic. */
  probe: undefined as ((this: void, keys: ScopeKeys, mode: Mode) => void) | undefined,
  /** persist.ts: resumes scopes resumed through another master (binary upgrade). */
  lookOutside: undefined as ((this: void, scopes: ScopeKeys[]) => void) | undefined,
  lastOutside: 0,
};

/** How often the watcher lets persist.ts look at the state file. */
const OUTSIDE_EVERY = 0.5;

export function setAdvance(fn: (this: void, keys: ScopeKeys) => void): void {
  watch.advance = fn;
}

/**
 * outage.keepProbers: a scope whose requests this worker holds has the prober it waits
 * for (its outage's, its ready probe's, its retry lane's connect prober) on this node,
 * even when no new request comes (the prober's worker was killed, or exits).
 */
export function setProbe(fn: (this: void, keys: ScopeKeys, mode: Mode) => void): void {
  watch.probe = fn;
}

export function setLookOutside(fn: (this: void, scopes: ScopeKeys[]) => void): void {
  watch.lookOutside = fn;
}

/** The scopes this worker holds requests for, to persist.ts, every OUTSIDE_EVERY. */
function lookOutside(now: number): void {
  if (watch.lookOutside === undefined || now - watch.lastOutside < OUTSIDE_EVERY) return;
  watch.lastOutside = now;
  const scopes: ScopeKeys[] = [];
  const seen: { [scope: string]: true | undefined } = {};
  for (const [, q] of pairs(localQueues)) {
    const keys = (q as LocalQueue).keys;
    if (seen[keys.scope] === undefined) {
      seen[keys.scope] = true;
      scopes.push(keys);
    }
  }
  if (scopes.length > 0) {
    const [ok, err] = pcall(watch.lookOutside, scopes);
    if (!ok) ngx.log(ngx.ERR, `intermission: watcher failed to read the state file: ${tostring(err)}`);
  }
}

/** Wakes this worker's watcher now instead of at its next poll. */
export function poke(): void {
  if (watch.running && watch.sema !== undefined && watch.sema.count() < 0) watch.sema.post(1);
}

/**
 * Wakes this worker's waiters of this scope whose tickets the head has passed (granted
 * in this worker's log() or header_filter(), or by another worker whose advance this
 * one saw), at once rather than at the watcher's next poll, and without waking the
 * watcher (which would advance the scope once more for nothing). Never yields.
 */
export function wakeDue(keys: ScopeKeys): void {
  if (watch.waiting <= 0) return;
  wakeLane(keys.retry);
  wakeLane(keys.main);
}

function wakeLane(lane: Lane): void {
  const q = localQueues[lane.seq];
  if (q !== undefined) postDue(lane.seq, q, headOf(lane));
}

/** A fresh waiter for one request; its semaphore is reused if it queues again. */
export function newWaiter(keys: ScopeKeys): LuaMultiReturn<[Waiter | undefined, string | undefined]> {
  const [sema, err] = semaphore.new(0);
  if (sema === undefined) return $multi(undefined, `cannot create a semaphore: ${err}`);
  return $multi({ keys, lane: keys.main, ticket: 0, deadline: 0, sema, aborted: false, done: true }, undefined);
}

function post(w: Waiter): void {
  if (w.sema.count() < 0) w.sema.post(1);
}

/** Wakes a waiter whatever it waits for (abort). */
export function wake(w: Waiter): void {
  post(w);
}

function pumpScope(id: string, q: LocalQueue): void {
  watch.advance!(q.keys);
  const mode = modeOf(q.keys);
  if (watch.probe !== undefined) watch.probe(q.keys, mode);
  if (mode === "maintenance") {
    for (let i = q.first; i <= q.last; i++) {
      const w = q.items[i];
      if (w !== undefined && !w.done) post(w);
    }
  }
  postDue(id, q, headOf(q.lane));
}

/**
 * The lane's head. No head: the scope's state was reclaimed (reclaim.ts), which it is only
 * once every ticket is decided: each waiter reads its claim.
 */
function headOf(lane: Lane): number {
  const [h] = zones.state.get(lane.head);
  return type(h) === "number" ? (h as number) : math.huge;
}

/** Posts the listed waiters whose tickets the head has passed, and drops them from the list. */
function postDue(id: string, q: LocalQueue, head: number): void {
  while (q.first <= q.last) {
    const w = q.items[q.first];
    const listed = q.tickets[q.first];
    if (w !== undefined && !w.done && w.ticket === listed) {
      if (listed > head) break;
      post(w); // it reads its own claim and leaves the list with done()
    }
    q.items[q.first] = undefined;
    q.first++;
  }
  if (q.first > q.last && localQueues[id] === q) localQueues[id] = undefined;
}

/** Drops waiters whose request is gone without a word (a killed coroutine). */
function sweep(now: number): void {
  for (const [, q] of pairs(localQueues)) {
    const lq = q as LocalQueue;
    for (let i = lq.first; i <= lq.last; i++) {
      const w = lq.items[i];
      if (w !== undefined && !w.done && w.deadline + STALE_AFTER < now) done(w);
    }
  }
}

/** Seconds until the watcher must look again unless posted (see the top of this file). */
function nextLook(now: number): number {
  const poll = settings.cfg.poll_interval;
  if (ngx.worker.count() !== 1 || ngx.worker.exiting()) return poll;
  let wait = QUIET_WAIT;
  for (const [, q] of pairs(localQueues)) {
    const keys = (q as LocalQueue).keys;
    if (modeOf(keys) !== "paused") return poll;
    const until = num(zones.state, keys.until);
    if (until > 0) wait = math.min(wait, until - now);
  }
  return math.max(wait, poll);
}

function watcher(this: void, _premature: boolean): void {
  const sema = watch.sema!;
  while (true) {
    for (const [scope, q] of pairs(localQueues)) {
      const [ok, err] = pcall(pumpScope, scope as string, q as LocalQueue);
      if (!ok) ngx.log(ngx.ERR, `intermission: watcher failed for scope ${scope as string}: ${tostring(err)}`);
    }
    ngx.update_time();
    const now = ngx.now();
    if (now - watch.lastSweep >= SWEEP_EVERY) {
      watch.lastSweep = now;
      sweep(now);
    }
    lookOutside(now);
    if (watch.waiting <= 0) break;
    sema.wait(nextLook(now));
  }
  watch.running = false;
}

function ensureWatcher(): LuaMultiReturn<[boolean, string | undefined]> {
  if (watch.running) return $multi(true, undefined);
  if (watch.sema === undefined) {
    const [sema, err] = semaphore.new(0);
    if (sema === undefined) return $multi(false, `cannot create the watcher semaphore: ${err}`);
    watch.sema = sema;
  }
  const [ok, err] = ngx.timer.at(0, watcher);
  if (!ok) return $multi(false, `cannot start the watcher: ${err}`);
  watch.running = true;
  return $multi(true, undefined);
}

/**
 * Lists a waiter under its ticket and makes sure the watcher runs. False: there is no
 * watcher (an exiting worker cannot start timers), so the waiter must look for itself.
 */
export function track(w: Waiter, keys: ScopeKeys, lane: Lane, ticket: number, deadline: number): boolean {
  w.keys = keys;
  w.lane = lane;
  w.ticket = ticket;
  w.deadline = deadline;
  w.done = false;
  watch.waiting++;
  const [ok, err] = ensureWatcher();
  if (!ok) ngx.log(ngx.WARN, `intermission: no watcher, held request_id=${ngx.var.request_id ?? "-"} looks for itself: ${err}`);
  // One local list per scope and lane: tickets of a lane are ordered, across lanes not.
  const id = lane.seq;
  let q = localQueues[id];
  if (q === undefined) {
    q = { keys, lane, items: [], tickets: [], first: 1, last: 0 };
    localQueues[id] = q;
  }
  q.last++;
  q.items[q.last] = w;
  q.tickets[q.last] = ticket;
  return ok;
}

/** The request is not waiting any more, whatever the outcome. */
export function done(w: Waiter): void {
  if (w.done) return;
  w.done = true;
  watch.waiting--;
}
