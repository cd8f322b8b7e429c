// The node-wide FIFO of held requests, shared by all workers through the shared dict.
//
// Every held request takes a ticket (`seq`, the tail). The head, `grant`, is the last
// position given leave to go; tickets up to it may proceed. Moving the head is
// lock-free and safe from any worker and any phase (log included), because each step
// is settled by an atomic `add`:
//   - position key  `p|t`: the one advancer that adds it owns the move of the head to t;
//   - claim key     `c|t`: whoever adds it first decides the ticket's fate. The advancer
//     writes the release generation (a number: "granted"); a request that leaves first
//     writes "left" (then the advancer gives its slot back and moves on).
// The release window bounds the slots in use per release generation: a slot is taken
// when a ticket is granted and given back in log() when the released request is done
// (as lua-resty-limit-traffic's limit.conn does with leaving()), or at once if the
// granted request was aborted instead.
import { ScopeKeys, zones, num } from "./shm";
import { settings } from "./settings";

const LEFT = "left";
/** Safety bound on one advance() call; each step is a few dict operations. */
const MAX_STEPS = 100000;

/**
 * How long per-ticket keys live: past any hold, then they clean themselves up. They are
 * never deleted early: a deleted position key could be added again by a late advancer.
 */
function ticketTtl(): number {
  return settings.cfg.max_hold + 60;
}

export function slotKey(keys: ScopeKeys, releaseGen: number): string {
  return keys.slotsPrefix + releaseGen;
}

/** Takes the next ticket. Tickets are positive and strictly increasing per scope. */
export function issue(keys: ScopeKeys): LuaMultiReturn<[number | undefined, string | undefined]> {
  const [ticket, err] = zones.state.incr(keys.seq, 1, 0);
  if (ticket === undefined) return $multi(undefined, `cannot issue a ticket: ${err}`);
  return $multi(ticket, undefined);
}

/** Tickets issued but not yet granted (they may include some that left). */
export function waiting(keys: ScopeKeys): number {
  return num(zones.state, keys.seq) - num(zones.state, keys.grant);
}

export function head(keys: ScopeKeys): number {
  return num(zones.state, keys.grant);
}

/**
 * The release generation that granted this ticket, LEFT if it left first,
 * or undefined if it is still waiting.
 */
export function claimOf(keys: ScopeKeys, ticket: number): number | string | undefined {
  const [v] = zones.queue.get(keys.claimPrefix + ticket);
  return v as number | string | undefined;
}

/**
 * Grants waiting tickets in order while the release window has room.
 * Returns how many were granted. Never yields.
 */
export function advance(keys: ScopeKeys): number {
  const state = zones.state;
  const queue = zones.queue;
  const [mode] = state.get(keys.mode);
  // Paused or in maintenance: nobody goes. Draining (or running, with stragglers): go.
  if (mode === "paused" || mode === "maintenance") return 0;

  const releaseGen = num(state, keys.releaseGen);
  const slots = slotKey(keys, releaseGen);
  const window = settings.cfg.release_window;
  const ttl = ticketTtl();
  let granted = 0;

  for (let step = 0; step < MAX_STEPS; step++) {
    const position = num(state, keys.grant);
    if (position >= num(state, keys.seq)) break;

    const [used] = state.incr(slots, 1, 0, ttl);
    if (used === undefined) break;
    if (used > window) {
      state.incr(slots, -1);
      break;
    }

    const next = position + 1;
    const [owner] = queue.add(keys.positionPrefix + next, true, ttl);
    if (!owner) {
      // Another worker is moving the head to `next` right now; look again.
      state.incr(slots, -1);
      continue;
    }
    state.set(keys.grant, next);

    const [won] = queue.add(keys.claimPrefix + next, releaseGen, ttl);
    if (won) {
      granted++;
    } else {
      // The ticket left before its turn: its slot goes to the next one.
      state.incr(slots, -1);
    }
  }
  return granted;
}

export type LeaveResult = "left" | "granted";

/**
 * A held request gives up its place. "left": it is out of the queue and must not go
 * upstream. "granted": its turn came first; the caller decides whether it goes now
 * or gives the slot back with releaseSlot().
 */
export function leave(keys: ScopeKeys, ticket: number): LuaMultiReturn<[LeaveResult, number]> {
  const [ok] = zones.queue.add(keys.claimPrefix + ticket, LEFT, ticketTtl());
  if (ok) return $multi("left", 0);
  const claim = claimOf(keys, ticket);
  if (type(claim) === "number") return $multi("granted", claim as number);
  return $multi("left", 0);
}

/** Gives back a release-window slot and lets the next ticket go. Never yields. */
export function releaseSlot(keys: ScopeKeys, releaseGen: number): void {
  zones.state.incr(slotKey(keys, releaseGen), -1);
  advance(keys);
}
