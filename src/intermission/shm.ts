// The shared-dict zones and the names of the keys we keep in them.
//
// Two zones: `intermission` holds the state and counters (small, listed by the control
// API), `intermission_queue` holds one pair of keys per held ticket (large, never listed).
// Key names are built once per scope and per worker and then reused, so the hot path
// never builds a string.

export interface ScopeKeys {
  scope: string;
  /** "paused" | "maintenance" | "draining"; absent while running. */
  mode: string;
  since: string;
  until: string;
  reason: string;
  /** Incremented by every resume; released requests hold a slot of one generation. */
  releaseGen: string;
  /** Tickets issued (the queue's tail). */
  seq: string;
  /** Positions granted (the queue's head); a ticket <= grant may go. */
  grant: string;
  /** Requests held on this node now. */
  held: string;
  /** Prefix of the release-window slot counters, one per release generation. */
  slotsPrefix: string;
  /** Prefixes of the per-ticket keys in the queue zone. */
  positionPrefix: string;
  claimPrefix: string;
  counterPrefix: string;
}

/** Global key: how many scopes are not running. Absent or 0: every scope runs. */
export const BUSY_KEY = "busy";
/** Global key: serialises state transitions. */
export const LOCK_KEY = "lock";
/** Marks a scope as known, for status and metrics. */
export const SCOPE_MARK_PREFIX = "scope|";

export const zones: { state: NgxSharedDict; queue: NgxSharedDict } = {
  state: undefined as unknown as NgxSharedDict,
  queue: undefined as unknown as NgxSharedDict,
};

/** Binds the zones named by the `dict` option; called by setup() and again per worker. */
export function bindZones(name: string): LuaMultiReturn<[boolean, string | undefined]> {
  const state = ngx.shared[name];
  const queue = ngx.shared[`${name}_queue`];
  if (state === undefined || queue === undefined) {
    return $multi(false, `lua_shared_dict "${name}" and "${name}_queue" must be declared: include nginx/intermission.conf in the http block`);
  }
  zones.state = state;
  zones.queue = queue;
  return $multi(true, undefined);
}

const keyCache: { [scope: string]: ScopeKeys | undefined } = {};
let cachedScopes = 0;
/** Scopes come from nginx config, so there are few; the cap guards against a variable fed by clients. */
const KEY_CACHE_LIMIT = 1000;

function makeKeys(scope: string): ScopeKeys {
  const p = `${scope}|`;
  return {
    scope,
    mode: `${p}mode`,
    since: `${p}since`,
    until: `${p}until`,
    reason: `${p}reason`,
    releaseGen: `${p}rgen`,
    seq: `${p}seq`,
    grant: `${p}grant`,
    held: `${p}held`,
    slotsPrefix: `${p}slots|`,
    positionPrefix: `${p}p|`,
    claimPrefix: `${p}c|`,
    counterPrefix: `${p}n|`,
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

/** Records that a scope exists so status and metrics can list it. */
export function markScope(scope: string): void {
  zones.state.set(SCOPE_MARK_PREFIX + scope, true);
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
