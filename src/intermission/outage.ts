// Unplanned outages: nobody paused, yet the upstream stopped accepting connections (a
// crash, a restart, a deploy). With `outage_hold` on, a request that was never held and
// whose connection failed before a byte was sent enters its scope on this node into the
// mode "outage" (gate.retry): new requests are held at once without trying the upstream,
// one prober per scope and node connects to the failed address, and when it accepts the
// backlog is released exactly as after a resume (release.resumeLocked: in order, slow
// start, the retry lane, the ready probe if set). The state is node-local: it is never
// written to Redis, and the fleet's sync leaves a local outage alone.
//
//   running --connect failed--> outage --the address accepts--> draining | running
//   outage --pause/maintenance (operator)--> paused | maintenance: the prober stops
//
// Bounds: a request waits min(outage_hold, max_hold); once an outage is older than
// outage_hold, new requests get 503 + Retry-After at once (failingFast) until it ends.
import { ScopeKeys, zones, num, keysFor, ensureScope } from "./shm";
import { settings } from "./settings";
import { Mode, modeOf, writeMode } from "./mode";
import * as release from "./release";
import * as ready from "./ready";
import * as counters from "./counters";
import * as waiters from "./waiters";

/** State-zone key of the scope's prober claim (in the scope's own key space). */
function proberKey(keys: ScopeKeys): string {
  return `${keys.scope}|oprober`;
}
/** Seconds the prober's claim lives without a refresh: a prober that died is replaced after this. */
const PROBER_LEASE = 5;
/** Pauses between connect attempts: 50 ms doubling to 500 ms (about two a second). */
const FIRST = 0.05;
const MAX = 0.5;
/** Connect timeout of one attempt (ms). */
const CONNECT_TIMEOUT = 500;

/** Whether `addr` ($upstream_addr) names an address the prober can connect to. */
export function probeable(addr: string | undefined): boolean {
  if (addr === undefined || addr === "") return false;
  const [host] = ready.lastAddress(addr);
  return host !== undefined;
}

/**
 * Enters the outage (from running only; any other mode is left as it is: a pause or
 * maintenance already holds or answers, a release in progress has its own retry lane).
 * Returns the mode now, or undefined when the scope cannot be had (max_scopes, lock).
 */
export function enter(keys: ScopeKeys, addr: string): Mode | undefined {
  const [made, err] = ensureScope(keys, settings.cfg.max_scopes);
  if (!made) {
    ngx.log(ngx.WARN, `intermission: no outage hold for scope ${keys.scope}: ${err}`);
    return undefined;
  }
  const [mode, lockErr] = release.withScopeLock(keys, (k) => {
    const m = modeOf(k);
    if (m !== "running") return m;
    const zone = zones.state;
    const now = ngx.now();
    const [okAddr] = zone.safe_set(k.outageAddr, addr);
    if (!okAddr) return m;
    zone.safe_set(k.since, now);
    zone.safe_set(k.until, 0);
    zone.safe_set(k.reason, "");
    const [ok] = writeMode(k, "running", "outage");
    if (!ok) return m;
    counters.count(k, "outages");
    ngx.log(ngx.NOTICE, `intermission: audit action=outage-start scope=${k.scope} upstream=${addr} outage_hold=${settings.cfg.outage_hold}`);
    return "outage" as Mode;
  });
  if (mode === undefined) {
    ngx.log(ngx.WARN, `intermission: no outage hold for scope ${keys.scope}: ${lockErr}`);
    return undefined;
  }
  if (mode === "outage") ensureProber(keys);
  return mode;
}

/** An outage older than outage_hold: new requests are answered 503 at once. */
export function failingFast(keys: ScopeKeys): boolean {
  return ngx.now() - num(zones.state, keys.since) >= settings.cfg.outage_hold;
}

/** The failed address and how long the outage has lasted, for status. */
export function describe(keys: ScopeKeys): { upstream: string; seconds: number; fail_fast: boolean } {
  const [addr] = zones.state.get(keys.outageAddr);
  return {
    upstream: type(addr) === "string" ? (addr as string) : "",
    seconds: math.max(0, ngx.now() - num(zones.state, keys.since)),
    fail_fast: failingFast(keys),
  };
}

/**
 * Starts the scope's prober unless one runs on this node (a shared-dict add; the prober
 * refreshes it). Called at entry and by every request that meets the outage, so that a
 * prober lost with its worker is replaced.
 */
export function ensureProber(keys: ScopeKeys): void {
  const [mine] = zones.state.safe_add(proberKey(keys), true, PROBER_LEASE);
  if (!mine) return;
  const [ok, err] = ngx.timer.at(0, prober, keys.scope);
  if (ok) return;
  zones.state.delete(proberKey(keys));
  ngx.log(ngx.ERR, `intermission: cannot start the outage prober of scope ${keys.scope}: ${err}`);
}

/** The address accepts connections: the outage ends as a resume does. */
function finish(keys: ScopeKeys, where: string): void {
  release.withScopeLock(keys, (k) => {
    if (modeOf(k) !== "outage") return;
    const now = ngx.now();
    const lasted = now - num(zones.state, k.since);
    release.resumeLocked(k, now);
    counters.observeOutage(k, lasted);
    ngx.log(ngx.NOTICE, `intermission: audit action=outage-end scope=${k.scope} upstream=${where} seconds=${string.format("%.3f", lasted)}`);
  });
  waiters.poke();
}

function prober(this: void, premature: boolean, scope: string): void {
  const keys = keysFor(scope);
  const [addr] = zones.state.get(keys.outageAddr);
  const [host, port] = ready.lastAddress(type(addr) === "string" ? (addr as string) : "");
  let pause = FIRST;
  while (host !== undefined && !premature && !ngx.worker.exiting()) {
    // A pause, maintenance or resume took the outage over: nothing left to probe for.
    if (modeOf(keys) !== "outage") break;
    zones.state.safe_set(proberKey(keys), true, PROBER_LEASE);
    const sock = ngx.socket.tcp();
    sock.settimeout(CONNECT_TIMEOUT);
    const [ok] = port !== undefined ? sock.connect(host, port) : sock.connect(host);
    if (ok !== undefined) {
      sock.close();
      ngx.update_time();
      finish(keys, addr as string);
      break;
    }
    counters.count(keys, "probe_failures");
    ngx.sleep(pause);
    pause = math.min(pause * 2, MAX);
  }
  zones.state.delete(proberKey(keys));
}
