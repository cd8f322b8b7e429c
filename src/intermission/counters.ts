// Per-scope counters and the hold-duration histogram, in their own zone (<dict>_counters)
// so that every worker adds to the same numbers, they survive a reload, and no amount of
// statistics can ever push the release state out of the state zone.
import { ScopeKeys, zones, num, UNHELD_PREFIX } from "./shm";

export type CounterName = "held" | "released" | "timed_out" | "aborted" | "maintenance" | "rejected" | "passed" | "retried" | "probe_failures"
  | "outages" | "outage_held" | "fail_fast";
/**
 * Every hold ends in exactly one outcome, as in Vitess's buffer:
 *   held + retried = released + timed_out + aborted + maintenance + (held now)
 * retried: second holds of released requests whose upstream connection failed.
 * rejected: refused at once, never held (queue full, maintenance).
 * passed: the part of timed_out that on_timeout = "pass" forwarded.
 * Unplanned outages (outage.ts), outside the balance: outages started; outage_held, the
 * holds an outage caused (a never-held request whose connection failed, counted in
 * retried, or a new one held while it lasts, counted in held); fail_fast, the part of
 * rejected answered at once because an outage outlasted outage_hold.
 */
export const COUNTER_NAMES: CounterName[] = ["held", "released", "timed_out", "aborted", "maintenance", "rejected", "passed", "retried", "probe_failures", "outages", "outage_held", "fail_fast"];

/** Upper bounds (seconds) of the hold-duration histogram buckets; +Inf is implied. */
export const HOLD_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

export function count(keys: ScopeKeys, name: CounterName): void {
  zones.counters.incr(keys.counterPrefix + name, 1, 0);
}

/** Adds to a running total (seconds waited for readiness, ...). */
export function add(keys: ScopeKeys, name: string, value: number): void {
  zones.counters.incr(keys.counterPrefix + name, value, 0);
}

export function total(keys: ScopeKeys, name: string): number {
  return num(zones.counters, keys.counterPrefix + name);
}

export function read(keys: ScopeKeys, name: CounterName): number {
  return num(zones.counters, keys.counterPrefix + name);
}

/** Records one hold that ended after `seconds`, whatever its outcome. */
export function observeHold(keys: ScopeKeys, seconds: number): void {
  observe(keys, "", seconds);
}

/** Records one unplanned outage that lasted `seconds` (outage.ts). */
export function observeOutage(keys: ScopeKeys, seconds: number): void {
  observe(keys, "outage_", seconds);
}

/** One observation in the histogram named by `kind` ("": holds; "outage_": outages), same buckets. */
function observe(keys: ScopeKeys, kind: string, seconds: number): void {
  const zone = zones.counters;
  for (let i = 0; i < HOLD_BUCKETS.length; i++) {
    if (seconds <= HOLD_BUCKETS[i]) {
      zone.incr(`${keys.counterPrefix}${kind}bucket|${i}`, 1, 0);
      break;
    }
  }
  zone.incr(`${keys.counterPrefix}${kind}hold_count`, 1, 0);
  zone.incr(`${keys.counterPrefix}${kind}hold_sum`, seconds, 0);
}

/** Cumulative bucket counts (Prometheus style), the total count and the sum. */
export function holdHistogram(keys: ScopeKeys, kind = ""): LuaMultiReturn<[number[], number, number]> {
  const zone = zones.counters;
  const cumulative: number[] = [];
  let running = 0;
  for (let i = 0; i < HOLD_BUCKETS.length; i++) {
    running += num(zone, `${keys.counterPrefix}${kind}bucket|${i}`);
    cumulative.push(running);
  }
  return $multi(cumulative, num(zone, `${keys.counterPrefix}${kind}hold_count`), num(zone, `${keys.counterPrefix}${kind}hold_sum`));
}

/**
 * A request forwarded by the slow path because its own scope (and the node-wide scope
 * `default`) runs, while some scope on this node is paused, in maintenance or draining.
 * Under its own prefix, so that passedUnheldByScope finds every scope that ever had one,
 * scopes that were never paused (and so have no state) included.
 */
export function passedUnheld(keys: ScopeKeys): void {
  zones.counters.incr(keys.unheld, 1, 0);
}

/**
 * Every scope's passedUnheld count since nginx started (the zone outlives a reload). For
 * the control API only: it scans the counters zone's keys.
 */
export function passedUnheldByScope(): { [scope: string]: number } {
  const out: { [scope: string]: number } = {};
  const zone = zones.counters;
  const prefixLength = UNHELD_PREFIX.length;
  for (const key of zone.get_keys(0)) {
    if (string.sub(key, 1, prefixLength) === UNHELD_PREFIX) {
      const [v] = zone.get(key);
      if (type(v) === "number") out[string.sub(key, prefixLength + 1)] = v as number;
    }
  }
  return out;
}
