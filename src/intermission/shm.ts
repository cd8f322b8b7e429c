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
//
// Namespaces. A scope's keys are `<scope>|<suffix>`, and a scope name is 1-64 of
// A-Z a-z 0-9 . _ : - (params.validScope), so it never holds "|" or "#". Every other key
// either has no "|" at all ("busy", "lock", "scopes", "control_prefix": no scope key can
// equal one) or starts with "#" ("#scope|<name>", "#inflight|<pid>", "#prober|<scope>",
// "#fleet|..."), which no scope name can: no scope, whatever its name, reaches another
// key, and a scan by prefix ("#scope|", "#inflight|") finds only its own family. 0.2.0
// and earlier named those families without the "#"; upgradeScopes() moves what they left.

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
  /**
   * Tickets counted in `decided` whose claim could not be written (the queue zone was
   * full when their request left): credits the advancer spends when it passes a ticket
   * with no claim, instead of counting that ticket decided a second time.
   */
  unclaimed: string;
  /** Window leases in use, the current (slow-start) window, and the back-off after a failure. */
  used: string;
  window: string;
  backoffUntil: string;
  backoffStep: string;
  /** Lease numbers: the last issued, and the oldest that may still be outstanding. */
  leaseSeq: string;
  leaseOldest: string;
  /**
   * Long-lived leases (release.ts freeLongLived): when a response last started well since
   * the resume (0: none yet), the typical time from grant to response start since the
   * resume (0: not known yet), and the leases freed silently since the last response
   * start (each of them may still hang at the upstream; release_window - 1 after a gateway
   * failure: one request at a time until a response starts well).
   */
  okAt: string;
  typical: string;
  probes: string;
  /** Until when the release waits for the ready probe (0: not waiting). */
  readyUntil: string;
  /** outage: the upstream address whose connection failed ($upstream_addr), probed by outage.ts. */
  outageAddr: string;
  /**
   * Counters zone (statistics, kept when the scope's state is reclaimed): the largest
   * queue of a pause and how long the last pause lasted.
   */
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
/**
 * Global key, never deleted: every ticket and lease number a reclaimed scope ever issued
 * is below it (reclaim.ts). A scope made again starts its sequences here, so a ticket
 * number is never issued twice while a claim of the earlier one may still be read.
 */
export const SEQ_BASE_KEY = "#seqbase";
/** Global key, fleet mode with fleet_release_window: this node's share of the fleet's window. */
export const FLEET_SHARE_KEY = "#fleet|share";
/** Fleet mode: set by setup() on a cold start, requests wait for the first sync (fleet/sync.ts). */
export const FLEET_PENDING_KEY = "#fleet|pending";
/** Fleet mode: the node has synced once (a reload finds it and does not wait again). */
export const FLEET_SYNCED_KEY = "#fleet|synced";
/** Fleet mode: the last sync error. */
export const FLEET_ERROR_KEY = "#fleet|error";
/** Counters zone: the per-scope count of requests passed unheld while another scope was stopped. */
export const UNHELD_PREFIX = "#unheld|";
/** Marks a scope as known, for status and metrics. */
export const SCOPE_MARK_PREFIX = "#scope|";
/** 0.2.0 and earlier: the mark's prefix, which the scope named "scope" shared. */
const LEGACY_MARK_PREFIX = "scope|";
/** 0.2.0 and earlier: the fleet's keys, and what they are called now. */
const LEGACY_FLEET_KEYS: [string, string][] = [["fleet|share", FLEET_SHARE_KEY], ["fleet|pending", FLEET_PENDING_KEY], ["fleet|synced", FLEET_SYNCED_KEY]];

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
    unclaimed: `${p}unclm`,
    used: `${p}used`,
    window: `${p}window`,
    backoffUntil: `${p}boff`,
    backoffStep: `${p}bstep`,
    leaseSeq: `${p}lseq`,
    leaseOldest: `${p}lold`,
    okAt: `${p}okat`,
    typical: `${p}typ`,
    probes: `${p}probes`,
    readyUntil: `${p}ready`,
    outageAddr: `${p}oaddr`,
    lastQueue: `${p}lastq`,
    lastPause: `${p}lastp`,
    leasePrefix: `${p}l|`,
    counterPrefix: p,
    unheld: UNHELD_PREFIX + scope,
  };
}

/** The scope that stands for the whole node: what a control request naming no scope gets. */
export const NODE_SCOPE = "default";

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

/** Whether the scope has state on this node (it was made, and not reclaimed since). */
export function scopeExists(keys: ScopeKeys): boolean {
  return zones.state.get(keys.made)[0] !== undefined;
}

/**
 * The ticket and lease sequences, and what counts against them: a scope starts them all
 * at the node's SEQ_BASE_KEY (decided at twice it: both lanes).
 */
export function sequenceKeys(keys: ScopeKeys): string[] {
  return [keys.main.seq, keys.main.head, keys.retry.seq, keys.retry.head, keys.stop, keys.leaseSeq, keys.leaseOldest];
}

/** The other numeric keys every scope has from its creation on (0 then); incr() needs them to exist. */
export function plainNumericKeys(keys: ScopeKeys): string[] {
  return [keys.dirty, keys.unclaimed, keys.used, keys.window, keys.backoffUntil, keys.backoffStep, keys.since,
    keys.until, keys.readyUntil];
}

function numericKeys(keys: ScopeKeys): string[] {
  const all = sequenceKeys(keys);
  all.push(keys.decided);
  for (const k of plainNumericKeys(keys)) all.push(k);
  return all;
}

/** Every key of the scope's in the state zone but its mark and its lock (reclaim.ts deletes them). */
export function stateKeys(keys: ScopeKeys): string[] {
  const all = numericKeys(keys);
  for (const k of [keys.mode, keys.reason, keys.okAt, keys.typical, keys.probes, keys.outageAddr]) all.push(k);
  return all;
}

/** The probers' claims of the scope (ready.ts, outage.ts): while one is there, a timer works for the scope. */
export function proberKeys(keys: ScopeKeys): string[] {
  return [`#prober|${keys.scope}`, `#connect|${keys.scope}`, `${keys.scope}|oprober`];
}

// ---- what a scope costs the state zone ----------------------------------------------

/** A shared-dict entry's headers: the rbtree node up to its color, and the shdict node up to its data. */
const ENTRY_HEADER = 32 + 36;
/** The longest scope name (params.validScope), the longest reason (params.ts) and mode. */
const LONGEST_SCOPE = 64;
const LONGEST_REASON = 500;
const LONGEST_MODE = "maintenance".length;
/** Node-wide keys: busy, lock, scopes, the control prefixes, the fleet's, one in-flight count per worker. */
const ZONE_RESERVE = 256 * 1024;

/** nginx's slab allocator hands out powers of two (from 8 bytes), whole 4 KiB pages above 2 KiB. */
function slabChunk(bytes: number): number {
  if (bytes > 2048) return math.ceil(bytes / 4096) * 4096;
  let chunk = 8;
  while (chunk < bytes) chunk *= 2;
  return chunk;
}

function entryBytes(key: string, valueBytes: number): number {
  return slabChunk(ENTRY_HEADER + key.length + valueBytes);
}

/**
 * The most one scope takes of the state zone, with the longest name: its numeric keys
 * (8-byte values), the mark, the mode, the reason, and the keys that exist only for a
 * moment (the advance lock, the ready and connect probers'), all at once.
 */
export function scopeBytes(): number {
  const name = string.rep("x", LONGEST_SCOPE);
  const keys = makeKeys(name);
  let total = 0;
  for (const k of numericKeys(keys)) total += entryBytes(k, 8);
  total += entryBytes(keys.made, 1) + entryBytes(keys.mode, LONGEST_MODE) + entryBytes(keys.reason, LONGEST_REASON);
  total += entryBytes(keys.lock, 1) + entryBytes(`#prober|${name}`, 1) + entryBytes(`#connect|${name}`, 1);
  return total;
}

/**
 * max_scopes bounds the state zone only if the zone can hold that many scopes at their
 * largest: setup() refuses to start otherwise (the reason), instead of a scope failing
 * with "no memory" one day. Each 4 KiB page also costs the allocator a 24-byte descriptor.
 */
export function stateZoneTooSmall(maxScopes: number, dict: string): string | undefined {
  const needed = (maxScopes * scopeBytes() + ZONE_RESERVE) * (1 + 24 / 4096);
  const capacity = zones.state.capacity();
  if (capacity >= needed) return undefined;
  return `option "max_scopes" = ${maxScopes} needs a state zone of ${math.ceil(needed / 1024)} KiB (${scopeBytes()} bytes a scope at most), but lua_shared_dict ${dict} has ${math.floor(capacity / 1024)} KiB: make the zone larger or max_scopes smaller`;
}

/**
 * Keys of 0.2.0 and earlier, whose zones outlive a reload, under their names now: the
 * scope marks "scope|<name>" (one whose scope really has state: its numeric keys were
 * made before the mark) and the fleet's keys. The old ones are deleted, so that a scope
 * named "scope" or "fleet" never meets them.
 */
function upgradeKeys(): void {
  const zone = zones.state;
  const prefixLength = LEGACY_MARK_PREFIX.length;
  for (const key of zone.get_keys(0)) {
    if (string.sub(key, 1, prefixLength) !== LEGACY_MARK_PREFIX) continue;
    const scope = string.sub(key, prefixLength + 1);
    const [value] = zone.get(key);
    const [seq] = zone.get(`${scope}|seq`);
    if (value === true && type(seq) === "number" && string.match(scope, "^[%w%._:%-]+$")[0] !== undefined) {
      const [ok, err] = zone.safe_add(SCOPE_MARK_PREFIX + scope, true);
      if (!ok && err !== "exists") {
        ngx.log(ngx.ERR, `intermission: cannot carry over scope ${scope} of an earlier version: ${err}`);
        continue; // kept under its old name, to be carried over at the next start
      }
      zone.delete(key);
    }
  }
  for (const [old, now] of LEGACY_FLEET_KEYS) {
    const [value] = zone.get(old);
    if (value === undefined) continue;
    const [ok, err] = zone.safe_add(now, value);
    if (ok || err === "exists") zone.delete(old);
  }
}

/**
 * Scopes made by an earlier version counted their held requests in `<scope>|held` and have
 * no `decided`; the zones outlive a reload, so setup() gives them one: the tickets issued
 * minus those held then. Without it incr(decided) would fail and every ticket ever issued
 * would count as held (a full queue at the next pause).
 */
export function upgradeScopes(): void {
  const zone = zones.state;
  upgradeKeys();
  for (const scope of knownScopes()) {
    const keys = keysFor(scope);
    zone.safe_add(keys.unclaimed, 0); // 0.2.0 and earlier: no credits were ever owed
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
