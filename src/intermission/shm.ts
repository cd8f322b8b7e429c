// The shared-dict zones and the names of the keys we keep in them.
//
// Three zones, each for one kind of data:
//   <dict>           state: per-scope mode, queue pointers and window. Written only with
//                    safe_set/safe_add (and incr on keys that already exist), so nothing in
//                    it is ever evicted: losing a key here would strand or forward requests.
//   <dict>_queue     one small key per waiting ticket and per window lease; deleted when
//                    settled, never evicted (safe_add), never expiring while the queue waits.
//   <dict>_counters  outcome counters and the hold histogram. Eviction there costs only
//                    statistics, so plain incr with an initial value is fine.
// Key names are built once per scope and per worker and then reused, so the hot path
// never builds a string.

/** One FIFO of tickets: the main queue, or the retry lane ahead of it. */
export interface Lane {
  name: "main" | "retry";
  /** Tickets issued (the tail). */
  seq: string;
  /** Tickets decided: every ticket <= head was granted or passed over. */
  head: string;
  /** Per-ticket keys in the queue zone: the deadline (w|t) and the claim (c|t). */
  ticketPrefix: string;
  claimPrefix: string;
}

export interface ScopeKeys {
  scope: string;
  /** Present once the scope was created (counts towards max_scopes). */
  made: string;
  /** "paused" | "maintenance" | "draining"; absent while running. */
  mode: string;
  since: string;
  /** When an unattended pause ends, by this node's clock; 0 = never. */
  until: string;
  reason: string;
  /** The scope's advance lock (non-blocking, see release.ts) and its wake-up count. */
  lock: string;
  dirty: string;
  /** Held requests in arrival order. */
  main: Lane;
  /** Released requests whose upstream connection failed: they go again before the main queue. */
  retry: Lane;
  /** The last main ticket of the backlog being released; tickets up to it are paced by the window. */
  stop: string;
  /**
   * Tickets decided (granted, left, passed over as dead), both lanes: only ever grows.
   * Held now = main.seq + retry.seq - decided (release.heldNow): a ticket counts as held
   * from the very incr that issues it, so no worker can die between counting a request
   * held and queueing it.
   */
  decided: string;
  /** Window leases in use, the current (slow-start) window, and the back-off after a failure. */
  used: string;
  window: string;
  backoffUntil: string;
  backoffStep: string;
  /** Lease numbers: the last issued, and the oldest that may still be outstanding. */
  leaseSeq: string;
  leaseOldest: string;
  /** Until when the release waits for the ready probe (0: not waiting). */
  readyUntil: string;
  /** outage: the upstream address whose connection failed ($upstream_addr), probed by outage.ts. */
  outageAddr: string;
  /** The last pause: its largest queue and how long it lasted. */
  lastQueue: string;
  lastPause: string;
  /** Per-lease keys in the queue zone. */
  leasePrefix: string;
  /** Counters zone. */
  counterPrefix: string;
  /** Counters zone: requests of this scope passed unheld while another scope was stopped (counters.passedUnheld). */
  unheld: string;
}

/** Global key: how many scopes are not running (0: every scope runs). Created by setup(), never deleted. */
export const BUSY_KEY = "busy";
/** Global key: serialises fleet start-up bookkeeping (lock.ts). */
export const LOCK_KEY = "lock";
/** Global key: how many scopes exist (bounded by max_scopes). */
export const SCOPE_COUNT_KEY = "scopes";
/** Global key, fleet mode with fleet_release_window: this node's share of the fleet's window. */
export const FLEET_SHARE_KEY = "fleet|share";
/** Counters zone: the per-scope count of requests passed unheld while another scope was stopped. */
export const UNHELD_PREFIX = "unheld|";
/** Marks a scope as known, for status and metrics. */
export const SCOPE_MARK_PREFIX = "scope|";

export const zones: { state: NgxSharedDict; queue: NgxSharedDict; counters: NgxSharedDict } = {
  state: undefined as unknown as NgxSharedDict,
  queue: undefined as unknown as NgxSharedDict,
  counters: undefined as unknown as NgxSharedDict,
};

/** Binds the zones named by the `dict` option; called by setup() and again per worker. */
export function bindZones(name: string): LuaMultiReturn<[boolean, string | undefined]> {
  const state = ngx.shared[name];
  const queue = ngx.shared[`${name}_queue`];
  const counters = ngx.shared[`${name}_counters`];
  if (state === undefined || queue === undefined || counters === undefined) {
    return $multi(false, `lua_shared_dict "${name}", "${name}_queue" and "${name}_counters" must be declared: include nginx/intermission.conf in the http block`);
  }
  zones.state = state;
  zones.queue = queue;
  zones.counters = counters;
  return $multi(true, undefined);
}

const keyCache: { [scope: string]: ScopeKeys | undefined } = {};
let cachedScopes = 0;
/** Scopes come from nginx config, so there are few; the cap guards against a variable fed by clients. */
const KEY_CACHE_LIMIT = 4096;

function makeKeys(scope: string): ScopeKeys {
  const p = `${scope}|`;
  return {
    scope,
    made: SCOPE_MARK_PREFIX + scope,
    mode: `${p}mode`,
    since: `${p}since`,
    until: `${p}until`,
    reason: `${p}reason`,
    lock: `${p}lock`,
    dirty: `${p}dirty`,
    main: { name: "main", seq: `${p}seq`, head: `${p}head`, ticketPrefix: `${p}w|`, claimPrefix: `${p}c|` },
    retry: { name: "retry", seq: `${p}rseq`, head: `${p}rhead`, ticketPrefix: `${p}rw|`, claimPrefix: `${p}rc|` },
    stop: `${p}stop`,
    decided: `${p}decided`,
    used: `${p}used`,
    window: `${p}window`,
    backoffUntil: `${p}boff`,
    backoffStep: `${p}bstep`,
    leaseSeq: `${p}lseq`,
    leaseOldest: `${p}lold`,
    readyUntil: `${p}ready`,
    outageAddr: `${p}oaddr`,
    lastQueue: `${p}lastq`,
    lastPause: `${p}lastp`,
    leasePrefix: `${p}l|`,
    counterPrefix: p,
    unheld: UNHELD_PREFIX + scope,
  };
}

export function keysFor(scope: string): ScopeKeys {
  let keys = keyCache[scope];
  if (keys === undefined) {
    keys = makeKeys(scope);
    if (cachedScopes < KEY_CACHE_LIMIT) {
      keyCache[scope] = keys;
      cachedScopes++;
    }
  }
  return keys;
}

/** Reads a numeric key; absent (or not a number) reads as 0. */
export function num(zone: NgxSharedDict, key: string): number {
  const [v] = zone.get(key);
  return type(v) === "number" ? (v as number) : 0;
}

/** Whether the scope has been created on this node (it has state). */
export function scopeExists(keys: ScopeKeys): boolean {
  return zones.state.get(keys.made)[0] !== undefined;
}

/** The numeric keys every scope has from its creation on; incr() needs them to exist. */
function numericKeys(keys: ScopeKeys): string[] {
  return [keys.dirty, keys.main.seq, keys.main.head, keys.retry.seq, keys.retry.head, keys.stop, keys.decided,
    keys.used, keys.window, keys.backoffUntil, keys.backoffStep, keys.leaseSeq, keys.leaseOldest, keys.since,
    keys.until, keys.readyUntil, keys.lastQueue, keys.lastPause];
}

/**
 * Creates the scope's state on first use, within the max_scopes bound. The bound keeps
 * the state zone from ever filling up: a scope beyond it is refused and changes nothing.
 */
export function ensureScope(keys: ScopeKeys, maxScopes: number): LuaMultiReturn<[boolean, string | undefined]> {
  const zone = zones.state;
  if (zone.get(keys.made)[0] !== undefined) return $multi(true, undefined);
  zone.safe_add(SCOPE_COUNT_KEY, 0);
  const [count, err] = zone.incr(SCOPE_COUNT_KEY, 1);
  if (count === undefined) return $multi(false, `cannot count scopes: ${err}`);
  if (count > maxScopes) {
    zone.incr(SCOPE_COUNT_KEY, -1);
    return $multi(false, `too many scopes: this node keeps at most max_scopes = ${maxScopes}`);
  }
  for (const k of numericKeys(keys)) {
    const [ok, addErr] = zone.safe_add(k, 0);
    if (!ok && addErr !== "exists") {
      zone.incr(SCOPE_COUNT_KEY, -1);
      return $multi(false, `cannot create scope ${keys.scope}: ${addErr}`);
    }
  }
  const [added, markErr] = zone.safe_add(keys.made, true);
  if (!added) {
    // Another worker created it at the same moment: it counted it.
    zone.incr(SCOPE_COUNT_KEY, -1);
    if (markErr !== "exists") return $multi(false, `cannot create scope ${keys.scope}: ${markErr}`);
  }
  return $multi(true, undefined);
}

/**
 * Scopes made by an earlier version counted their held requests in `<scope>|held` and have
 * no `decided`; the zones outlive a reload, so setup() gives them one: the tickets issued
 * minus those held then. Without it incr(decided) would fail and every ticket ever issued
 * would count as held (a full queue at the next pause).
 */
export function upgradeScopes(): void {
  const zone = zones.state;
  for (const scope of knownScopes()) {
    const keys = keysFor(scope);
    if (zone.get(keys.decided)[0] !== undefined) continue;
    const heldThen = num(zone, `${scope}|held`);
    zone.safe_add(keys.decided, math.max(0, num(zone, keys.main.seq) + num(zone, keys.retry.seq) - heldThen));
  }
}

export function knownScopes(): string[] {
  const out: string[] = [];
  const prefixLength = SCOPE_MARK_PREFIX.length;
  for (const key of zones.state.get_keys(0)) {
    if (string.sub(key, 1, prefixLength) === SCOPE_MARK_PREFIX) out.push(string.sub(key, prefixLength + 1));
  }
  table.sort(out);
  return out;
}
