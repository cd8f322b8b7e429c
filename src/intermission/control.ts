// The control API: content_by_lua in a location of the user's (e.g. /_intermission/).
// The last path segment selects the action. Every answer is JSON (metrics aside).
import { keysFor, ScopeKeys, zones, num, knownScopes, scopeExists, SCOPE_COUNT_KEY } from "./shm";
import { sweep } from "./reclaim";
import { settings } from "./settings";
import * as state from "./state";
import * as release from "./release";
import * as ready from "./ready";
import * as outage from "./outage";
import * as counters from "./counters";
import * as params from "./params";
import { json, jsonError } from "./respond";
import { scopeOf, learnControlPrefix, DEFAULT_SCOPE as NODE_SCOPE } from "./gate";
import { renderMetrics } from "./metrics";
import * as inflight from "./inflight";
import { fleet } from "./fleetmode";
import { lookup, forget, requestKey } from "./record";
import * as unsettled from "./fleet/unsettled";

type Action = "status" | "pause" | "resume" | "maintenance" | "metrics" | "control" | "enable" | "disable";

const READS: { [a: string]: true } = { status: true, metrics: true };
const MUTATIONS: { [a: string]: true } = { pause: true, resume: true, maintenance: true };
const LEGACY: { [a: string]: true } = { control: true, enable: true, disable: true };

/** Compares without an early exit, so timing does not reveal how much matched. */
function constantTimeEquals(a: string, b: string): boolean {
  let diff = a.length === b.length ? 0 : 1;
  const n = math.max(a.length, b.length);
  for (let i = 1; i <= n; i++) {
    const x = string.byte(a, i) ?? 0;
    const y = string.byte(b, i) ?? 0;
    diff += math.abs(x - y);
  }
  return diff === 0;
}

function authorized(): boolean {
  const token = settings.cfg.control_token;
  if (token === undefined) return true;
  const header = ngx.var.http_authorization;
  if (header === undefined) return false;
  const [given] = string.match(header, "^[Bb]earer%s+(%S+)%s*$");
  if (given === undefined) return false;
  return constantTimeEquals(given, token);
}

/** Log-safe text: control characters and quotes are escaped. */
function sanitize(s: string): string {
  const [out] = string.gsub(s, '[%c"\\]', (c: string) => string.format("\\x%02x", string.byte(c)));
  return out;
}

function audit(action: string, keys: ScopeKeys, reason: string, extra: string): void {
  ngx.log(ngx.NOTICE, `intermission: audit action=${action} scope=${keys.scope} reason="${sanitize(reason)}" client=${ngx.var.remote_addr ?? "-"}${extra}`);
}

/** A mode as the answers show it: draining is running (with `draining: true`). */
function shown(mode: state.Mode): string {
  return mode === "draining" ? "running" : mode;
}

function describe(keys: ScopeKeys): { [k: string]: unknown } {
  const snap = state.snapshot(keys);
  // An outage whose prober was lost (its worker killed, or exited with nothing held) would
  // read "outage" until a request came: the status asks for one, which ends it at once if
  // the upstream is back (the next status says so).
  if (snap.mode === "outage") outage.ensureProber(keys);
  const count: { [k: string]: number } = {};
  for (const name of counters.COUNTER_NAMES) count[name] = counters.read(keys, name);
  return {
    scope: keys.scope,
    // `default` is the whole node: its pause or maintenance holds every scope that runs
    // (gate.ts); any other scope's acts on that scope's requests only.
    applies_to: keys.scope === NODE_SCOPE ? "node" : "scope",
    state: shown(snap.mode),
    // What the whole node (default) is in: while this scope runs, that is what its requests get.
    node_state: keys.scope === NODE_SCOPE ? shown(snap.mode) : shown(state.modeOf(keysFor(NODE_SCOPE))),
    draining: snap.mode === "draining",
    // An unplanned outage (outage.ts): the address that failed, for how long, and whether
    // new requests are answered at once (it outlasted outage_hold).
    outage: snap.mode === "outage" ? outage.describe(keys) : undefined,
    held: release.heldNow(keys),
    queued: release.queued(keys),
    release: release.progress(keys),
    waiting_ready: ready.waiting(keys),
    last_pause: { seconds: num(zones.counters, keys.lastPause), queue: num(zones.counters, keys.lastQueue) },
    ready_wait_seconds: counters.total(keys, "ready_wait_seconds"),
    in_flight: inflight.total(),
    since: snap.since > 0 ? snap.since : undefined,
    until: snap.until > 0 ? snap.until : undefined,
    reason: snap.reason !== "" ? snap.reason : undefined,
    release_window: settings.cfg.release_window,
    max_hold: settings.cfg.max_hold,
    store: settings.cfg.store,
    counters: count,
    // Per scope, requests passed unheld while another scope was stopped (since start): a
    // pause that holds nothing while these grow named the wrong scope.
    passed_unheld: counters.passedUnheldByScope(),
    shared_dict: {
      state: { capacity_kib: zones.state.capacity() / 1024, free_kib: zones.state.free_space() / 1024 },
      queue: { capacity_kib: zones.queue.capacity() / 1024, free_kib: zones.queue.free_space() / 1024 },
    },
  };
}

/**
 * In flight to the upstream: this node's, or in fleet mode the whole fleet's (this node
 * counted live, the others by their heartbeats). A node whose heartbeat predates the
 * fleet version `version` (it has not applied the pause yet) counts as at least one.
 */
function inFlightNow(version: number): number {
  if (settings.cfg.store !== "redis") return inflight.total();
  const [f] = fleet.sync!.fleetStatus();
  if (f === undefined) return inflight.total();
  let others = 0;
  for (const n of f.nodes as { id: string; in_flight: number; version?: number }[]) {
    if (n.id === fleet.sync!.node.id) continue;
    const behind = type(n.version) === "number" && n.version! < version;
    others += behind ? math.max(1, n.in_flight) : n.in_flight;
  }
  return inflight.total() + others;
}

/** Waits until nothing is in flight to the upstream (see inFlightNow), or `seconds` pass. */
function drain(seconds: number, version: number): LuaMultiReturn<[boolean, number]> {
  ngx.update_time();
  const deadline = ngx.now() + seconds;
  while (true) {
    const remaining = inFlightNow(version);
    if (remaining === 0) return $multi(true, 0);
    ngx.update_time();
    if (ngx.now() >= deadline) return $multi(false, remaining);
    ngx.sleep(0.01);
  }
}

function tooManyScopes(): string {
  return `too many scopes: this node keeps at most max_scopes = ${settings.cfg.max_scopes} scopes that are stopped, holding or releasing (idle ones are reclaimed)`;
}

/** Whether the scope has state, or a new one fits under max_scopes (sweeping idle scopes at the bound). */
function roomFor(keys: ScopeKeys): boolean {
  if (scopeExists(keys)) return true;
  const max = settings.cfg.max_scopes;
  if (num(zones.state, SCOPE_COUNT_KEY) < max) return true;
  sweep();
  return num(zones.state, SCOPE_COUNT_KEY) < max;
}

function mutate(action: "pause" | "resume" | "maintenance", keys: ScopeKeys, p: params.ControlParams): never {
  const cfg = settings.cfg;
  const reason = p.reason ?? "";
  const heldBefore = release.heldNow(keys);
  // A pause expires after pause_ttl unless told otherwise; maintenance lasts until resumed.
  const ttl = action === "pause" ? (p.ttl ?? cfg.pause_ttl) : action === "maintenance" ? (p.ttl ?? 0) : 0;
  if (action !== "resume") {
    // Within the scope bound, or nothing changes anywhere (the fleet included). The state
    // is made under the scope's lock by the transition (reclaim.ts); this only looks.
    if (!roomFor(keys)) return jsonError(409, `${action} not applied: ${tooManyScopes()}`, "scope");
  }
  let version = 0;
  if (cfg.store === "redis") {
    // The fleet's switch is in Redis: the answer says what Redis ended up with. "Not
    // applied" means it never will be; "unknown" that Redis did not answer in time and the
    // change may still land (until this node's next change to the scope fences it).
    const mode = action === "pause" ? "paused" : action === "maintenance" ? "maintenance" : "";
    const fence = unsettled.forScope(keys.scope);
    const [outcome, written, err, id, current] = fleet.remote!.change(keys.scope, mode, ttl, reason, fence);
    if (outcome === "unknown") {
      unsettled.note(keys.scope, id, action);
      ngx.log(ngx.ERR, `intermission: ${action} of scope ${keys.scope} outcome unknown (change ${id}): ${err}`);
      return json(503, {
        error: `${action} outcome unknown: the fleet's Redis did not answer (${err}); it may still take effect: ` +
          (action === "resume" ? "resume again" : "resume (a resume is idempotent)") + " once Redis answers",
        applied: "unknown", change: id,
      });
    }
    if (outcome === "not applied") {
      ngx.log(ngx.ERR, `intermission: ${action} of scope ${keys.scope} not applied: ${err}`);
      return json(503, { error: `${action} not applied: the fleet's Redis is unavailable (${err})`, applied: false });
    }
    if (fence.length > 0) unsettled.settled(keys.scope, fence);
    version = written;
    if (!current) {
      // Applied late, and already replaced by a later change (which the sync loop brings):
      // applying it here now would undo that one on this node.
      audit(action, keys, reason, ` ttl=${ttl} superseded=true`);
      const late = describe(keys);
      late.ok = true;
      late.applied = true;
      late.superseded = true;
      late.action = action;
      return json(200, late);
    }
  }
  let result: LuaMultiReturn<[state.Change | undefined, string | undefined]>;
  if (action === "pause") result = state.pause(keys, ttl, reason);
  else if (action === "maintenance") result = state.maintenance(keys, ttl, reason);
  else result = state.resume(keys);
  const [change, err] = result;
  if (change === undefined && err !== undefined && string.find(err, "too many scopes", 1, true)[0] !== undefined) {
    // Met the bound between the look above and the transition (a race with another new scope).
    return jsonError(409, `${action} not applied: ${err}`, "scope");
  }
  // After the resume, whose first grant takes a window of 1 whatever the share.
  if (action === "resume" && cfg.store === "redis") fleet.sync!.refreshShare();
  if (change === undefined) {
    ngx.log(ngx.ERR, `intermission: ${action} of scope ${keys.scope} failed: ${err}`);
    return jsonError(503, `${action} failed: ${err}`);
  }
  const ttlNote = action === "resume" ? ` held=${heldBefore}` : ` ttl=${ttl}`;
  audit(action, keys, reason, `${ttlNote} previous=${change.previous} already=${tostring(change.already)}`);

  const body = describe(keys);
  body.ok = true;
  body.applied = true;
  body.action = action;
  body.previous = change.previous === "draining" ? "running" : change.previous;
  body.already = change.already;
  if (action === "resume") body.released = heldBefore;
  // The change is in force; only its copy for a restart or binary upgrade failed (persist.ts).
  if (change.stateFileError !== undefined) body.state_file_error = change.stateFileError;
  if (action === "pause" && p.drain !== undefined) {
    const [drained, remaining] = drain(p.drain, version);
    body.drained = drained;
    body.in_flight = remaining;
  }
  return json(200, body);
}

/** The seed's toggle: GET /control pauses when running and resumes when paused. */
function legacy(action: "control" | "enable" | "disable", keys: ScopeKeys): never {
  let target: "pause" | "resume" = action === "enable" ? "pause" : "resume";
  if (action === "control") target = state.settle(keys) === "paused" ? "resume" : "pause";
  return mutate(target, keys, {});
}

function handle(): void {
  const uri = ngx.var.uri ?? "";
  const [segment] = string.match(uri, "([^/]+)/*$");
  const action = (segment ?? "") as Action;
  const method = ngx.req.get_method();

  if (!authorized()) {
    ngx.header["WWW-Authenticate"] = 'Bearer realm="intermission"';
    return jsonError(401, "missing or wrong token: send Authorization: Bearer <token>");
  }
  const legacyOn = settings.cfg.legacy_endpoints && LEGACY[action] !== undefined;
  if (READS[action] === undefined && MUTATIONS[action] === undefined && !legacyOn) {
    return jsonError(404, `unknown action "${sanitize(action)}": use status, pause, resume, maintenance or metrics`);
  }
  if (MUTATIONS[action] !== undefined && method !== "POST") {
    ngx.header["Allow"] = "POST";
    return jsonError(405, `${action} changes state: use POST`);
  }
  if ((READS[action] !== undefined || legacyOn) && method !== "GET" && method !== "HEAD") {
    ngx.header["Allow"] = "GET, HEAD";
    return jsonError(405, `${action} takes GET`);
  }

  if (LEGACY[action] === undefined) learnControlPrefix(uri);

  const [p, err] = params.parse();
  if (p === undefined) return jsonError(400, err!.message, err!.field);
  if (READS[action] === undefined && MUTATIONS[action] === undefined) {
    // Legacy toggles take no parameters beyond an optional scope.
    if (p.ttl !== undefined || p.drain !== undefined || p.reason !== undefined) {
      return jsonError(400, `${action} takes no parameters but scope`);
    }
  } else if (action !== "pause" && p.drain !== undefined) {
    return jsonError(400, "drain applies to pause only", "drain");
  } else if ((action === "resume" || READS[action] !== undefined) && (p.ttl !== undefined || p.reason !== undefined)) {
    return jsonError(400, `${action} takes no ttl or reason`, p.ttl !== undefined ? "ttl" : "reason");
  }

  let scope = p.scope;
  if (scope === undefined) {
    scope = scopeOf();
    if (!params.validScope(scope)) return jsonError(400, "the location's scope variable is not a valid scope", "scope");
  }
  const keys = keysFor(scope);

  if (action === "metrics") {
    ngx.status = 200;
    ngx.header["Content-Type"] = "text/plain; version=0.0.4";
    ngx.print(renderMetrics(knownScopes(), scope));
    return ngx.exit(200);
  }
  if (action === "status") {
    state.settle(keys);
    release.advance(keys); // also gives back the leases of requests that are gone
    const body = describe(keys);
    body.ok = true;
    if (settings.cfg.store === "redis") {
      body.node = fleet.sync!.node.id;
      const [f, err] = fleet.sync!.fleetStatus();
      body.fleet = f ?? { error: err };
      const syncErr = fleet.sync!.lastError();
      if (syncErr !== undefined) body.redis_error = syncErr;
    }
    return json(200, body);
  }
  if (action === "pause" || action === "resume" || action === "maintenance") return mutate(action, keys, p);
  return legacy(action as "control" | "enable" | "disable", keys);
}

export function control(): void {
  if (zones.state === undefined) {
    return jsonError(503, "intermission is not set up: include nginx/intermission.conf in the http block and call setup() in init_by_lua (see the error log)");
  }
  // With the hooks at server level access() counted this request in flight: it is not.
  const r = requestKey();
  if (type(lookup(r)) === "number") {
    forget(r);
    inflight.leaveNow();
  }
  const [ok, err] = pcall(handle);
  if (!ok) {
    ngx.log(ngx.ERR, `intermission: control request failed: ${tostring(err)}`);
    return jsonError(500, "internal error; see the nginx error log");
  }
}
