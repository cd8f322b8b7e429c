// This worker's held requests, and the one watcher that wakes them.
//
// Each held request sleeps on its own ngx.semaphore. One watcher per worker (an
// ngx.timer light thread) exists only while this worker holds requests. It wakes on
// this worker's own events at once (its semaphore is posted by resume, by a released
// request finishing here, ...) and otherwise every poll_interval to see what other
// workers changed in the shared dict. When it finds tickets granted it posts their
// semaphores in ticket order. When the worker holds nothing, the watcher ends.
import * as semaphore from "ngx.semaphore";
import { ScopeKeys } from "./shm";
import { settings } from "./settings";
import * as queue from "./queue";
import * as state from "./state";

export type Outcome = "released" | "maintenance" | "aborted";

export interface Waiter {
  keys: ScopeKeys;
  ticket: number;
  sema: NgxSemaphore;
  /** Set by whoever wakes the waiter, before posting its semaphore. */
  outcome?: Outcome;
  /** Release generation of the slot, when released. */
  releaseGen: number;
  /** The request stopped waiting (timeout, abort, maintenance); the watcher drops it. */
  gone: boolean;
}

interface LocalQueue {
  keys: ScopeKeys;
  items: (Waiter | undefined)[];
  first: number;
  last: number;
}

const localQueues: { [scope: string]: LocalQueue | undefined } = {};
const watch = { running: false, held: 0, sema: undefined as NgxSemaphore | undefined };

/** Wakes this worker's watcher now instead of at its next poll. */
export function poke(): void {
  if (watch.running && watch.sema !== undefined && watch.sema.count() < 0) watch.sema.post(1);
}

function wakeUp(w: Waiter, outcome: Outcome, releaseGen: number): void {
  if (w.outcome !== undefined) return;
  w.outcome = outcome;
  w.releaseGen = releaseGen;
  w.sema.post(1);
}

/** Posts every granted waiter at the front of a scope's local queue, in ticket order. */
function releaseGranted(q: LocalQueue): void {
  const headTicket = queue.head(q.keys);
  while (q.first <= q.last) {
    const w = q.items[q.first];
    if (w !== undefined && !w.gone) {
      if (w.ticket > headTicket) break;
      const claim = queue.claimOf(q.keys, w.ticket);
      // The head moves just before the claim is written: not settled yet, look again later.
      if (claim === undefined) break;
      if (type(claim) === "number") wakeUp(w, "released", claim as number);
      // Otherwise it left; either way it is off the local queue.
    }
    q.items[q.first] = undefined;
    q.first++;
  }
}

function answerMaintenance(q: LocalQueue): void {
  for (let i = q.first; i <= q.last; i++) {
    const w = q.items[i];
    if (w !== undefined && !w.gone) wakeUp(w, "maintenance", 0);
    q.items[i] = undefined;
  }
  q.first = q.last + 1;
}

function pumpScope(scope: string, q: LocalQueue): void {
  const mode = state.settle(q.keys);
  if (mode === "maintenance") {
    answerMaintenance(q);
  } else if (mode !== "paused") {
    queue.advance(q.keys);
    releaseGranted(q);
  }
  if (q.first > q.last) localQueues[scope] = undefined;
}

function watcher(this: void, _premature: boolean): void {
  const sema = watch.sema!;
  while (true) {
    for (const [scope, q] of pairs(localQueues)) {
      const [ok, err] = pcall(pumpScope, scope as string, q as LocalQueue);
      if (!ok) ngx.log(ngx.ERR, `intermission: watcher failed for scope ${scope as string}: ${tostring(err)}`);
    }
    if (watch.held <= 0) break;
    sema.wait(settings.cfg.poll_interval);
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

/** Puts a ticket on this worker's queue and makes sure the watcher runs. */
export function enqueue(keys: ScopeKeys, ticket: number): LuaMultiReturn<[Waiter | undefined, string | undefined]> {
  const [sema, semaErr] = semaphore.new(0);
  if (sema === undefined) return $multi(undefined, `cannot create a semaphore: ${semaErr}`);
  const [ok, err] = ensureWatcher();
  if (!ok) return $multi(undefined, err);

  let q = localQueues[keys.scope];
  if (q === undefined) {
    q = { keys, items: [], first: 1, last: 0 };
    localQueues[keys.scope] = q;
  }
  const w: Waiter = { keys, ticket, sema, releaseGen: 0, gone: false };
  q.last++;
  q.items[q.last] = w;
  watch.held++;
  return $multi(w, undefined);
}

/** The request is done waiting, whatever the outcome. */
export function finish(w: Waiter): void {
  if (w.gone) return;
  w.gone = true;
  watch.held--;
}

/** Marks a waiter aborted and wakes it (called from ngx.on_abort). */
export function abort(w: Waiter): void {
  wakeUp(w, "aborted", 0);
}

// Every transition made in this worker wakes its watcher at once.
state.listeners.changed = () => poke();
