// The slow path of the hooks: taken only while some scope is not running, or for a
// request that access() has seen before (an internal redirect). It decides whether the
// request passes, is answered 503, or is held (release.hold), and keeps the request's
// Record so that header_filter() and log() give back exactly what it took.
import { keysFor, zones, ScopeKeys, Lane, NODE_SCOPE } from "./shm";
import * as inflight from "./inflight";
import { fleet } from "./fleetmode";
import { settings } from "./settings";
import * as state from "./state";
import * as release from "./release";
import * as ready from "./ready";
import * as waiters from "./waiters";
import * as counters from "./counters";
import { unavailable } from "./respond";
import * as replay from "./replay";
import { logOnce } from "./burst";
import * as outage from "./outage";
import { requestKey, startTime, lookup, remember, rememberForwarded, forget, Record } from "./record";

const ngxVar = ngx.var;
/** The scope of a location that sets none, and the whole node (see gate()). */
export const DEFAULT_SCOPE = NODE_SCOPE;
/** State-zone key: the path prefixes of the control locations, learned by control(). */
const CONTROL_PREFIX_KEY = "control_prefix";
/** Control locations remembered at most (a config has one or two). */
const MAX_CONTROL_PREFIXES = 16;

/** $intermission_scope, else the seed's $app_name, else "default". */
export function scopeOf(): string {
  const scope = ngxVar.intermission_scope;
  if (scope !== undefined && scope !== "") return scope;
  const app = ngxVar.app_name;
  if (app !== undefined && app !== "") return app;
  return DEFAULT_SCOPE;
}

/**
 * The control locations' path prefixes, newline-separated ("\n/a/\n/b/\n", the newest
 * last), or undefined before the first control request.
 */
function controlPrefixes(): string | undefined {
  const [known] = zones.state.get(CONTROL_PREFIX_KEY);
  if (type(known) !== "string") return undefined;
  const list = known as string;
  return string.sub(list, 1, 1) === "\n" ? list : `\n${list}\n`; // one prefix, as earlier builds kept it
}

/**
 * control(): remembers where the control API lives, so that access() never holds its
 * requests when the hooks sit at server level (see alwaysPasses). Every control location
 * is kept.
 */
export function learnControlPrefix(uri: string): void {
  const [prefix] = string.match(uri, "^(.*/)[^/]+/*$");
  if (prefix === undefined || prefix === "/") return;
  let list = controlPrefixes() ?? "\n";
  if (string.find(list, `\n${prefix}\n`, 1, true)[0] !== undefined) return;
  list = `${list}${prefix}\n`;
  const [, count] = string.gsub(list, "\n", "\n");
  if (count - 1 > MAX_CONTROL_PREFIXES) list = string.gsub(list, "^\n[^\n]*", "", 1)[0];
  zones.state.safe_set(CONTROL_PREFIX_KEY, list);
}

/** Whether uri lies under one of the control locations. */
function isControl(uri: string): boolean {
  const prefixes = controlPrefixes();
  if (prefixes === undefined) return false;
  let from = 2;
  while (from <= prefixes.length) {
    const [to] = string.find(prefixes, "\n", from, true);
    if (to === undefined) return false;
    if (string.sub(uri, 1, to - from) === string.sub(prefixes, from, to - 1)) return true;
    from = to + 1;
  }
  return false;
}

function alwaysPasses(uri: string | undefined): boolean {
  const cfg = settings.cfg;
  if (uri !== undefined) {
    for (const path of cfg.health_check_paths) if (uri === path) return true;
    const locationPath = ngxVar.intermission_health_check_path;
    if (locationPath !== undefined && locationPath !== "" && uri === locationPath) return true;
    // With the hooks at server level the control location runs access() too: never
    // hold the requests that are to resume the others.
    if (isControl(uri)) return true;
  }
  // Unset or empty here falls back to setup()'s: a variable `set` in one location reads ""
  // in every other one (and a `map ... { default ""; }` reads "" wherever it is not set).
  let pattern = ngxVar.intermission_privileged_user_agent;
  if (pattern === undefined || pattern === "") pattern = cfg.privileged_user_agent;
  if (pattern !== undefined && pattern !== "") {
    const ua = ngxVar.http_user_agent;
    if (ua !== undefined) {
      const [from, , err] = ngx.re.find(ua, pattern, "jo");
      if (err !== undefined) ngx.log(ngx.ERR, `intermission: bad privileged user agent pattern: ${err}`);
      if (from !== undefined) return true;
    }
  }
  return false;
}

/** Seconds this location may hold a request: $intermission_max_time, else (unset, empty, not a positive number) max_hold. */
function maxHoldHere(): number {
  const v = ngxVar.intermission_max_time;
  if (v !== undefined) {
    const n = tonumber(v);
    if (n !== undefined && n > 0) return n;
  }
  return settings.cfg.max_hold;
}

function watchAbort(): void {
  const [abortOk, abortErr] = ngx.on_abort(onAbort);
  if (abortOk === undefined && abortErr !== "duplicate call") {
    ngx.log(ngx.INFO, `intermission: client aborts not detected while held: ${abortErr}`);
  }
}

function onAbort(this: void): void {
  const rec = lookup(requestKey());
  if (rec !== undefined && type(rec) === "table") {
    const w = (rec as Record).waiter;
    if (w !== undefined) {
      w.aborted = true;
      waiters.wake(w);
    }
  }
}

/** Passed upstream: counted in flight until log(). */
function forward(r: number, rec: Record | undefined): void {
  if (rec === undefined) rememberForwarded(r, startTime());
  else rec.state = "forwarded";
  inflight.enter();
}

function answer(r: number, rec: Record | undefined, keys: ScopeKeys, why: "maintenance" | "timeout" | "full"): never {
  if (rec === undefined) remember(r, { keys, state: "answered", lease: 0, start: startTime(), deadline: 0 });
  else rec.state = "answered";
  const reason = why === "maintenance" ? state.snapshot(keys).reason : "";
  return unavailable(why, settings.cfg.retry_after, reason);
}

/** Refused at once (max_held were held, or no room to hold it): 503 + Retry-After. */
function refuse(r: number, rec: Record | undefined, keys: ScopeKeys, requestId: string): never {
  counters.count(keys, "rejected");
  logOnce(ngx.WARN, "refused", `intermission: queue full, rejected request_id=${requestId} scope=${keys.scope} max_held=${settings.cfg.max_held}`);
  return answer(r, rec, keys, "full");
}

/**
 * Holds the request until its turn, its max time, an abort or maintenance. `bound`: at
 * most this many seconds (an outage's outage_hold), else the location's max time.
 */
function holdRequest(r: number, keys: ScopeKeys, bound?: number): void {
  const requestId = ngxVar.request_id ?? "-";
  // Before anything is made for it: a storm of refusals costs a shared-dict read each.
  if (release.atCapacity(keys)) return refuse(r, undefined, keys, requestId);
  const [w, err] = waiters.newWaiter(keys);
  if (w === undefined) {
    // Never forwarded while paused: a request that cannot be held is answered 503.
    logOnce(ngx.ERR, "waiter", `intermission: cannot hold request_id=${requestId}, answering 503: ${err}`);
    counters.count(keys, "rejected");
    return answer(r, undefined, keys, "full");
  }
  // What the request looks like here, for a retry to check that it comes back the same
  // (replay.ts): read on this slow path only, once per request.
  const rec: Record = {
    keys, state: "holding", lease: 0, waiter: w, start: startTime(), deadline: 0,
    requestId, uri: ngxVar.uri ?? "", args: ngxVar.args ?? "", internal: ngx.req.is_internal(),
  };
  remember(r, rec);
  watchAbort();

  rec.deadline = ngx.now() + math.min(maxHoldHere(), bound ?? math.huge);
  const [ticket] = release.admit(keys, keys.main, rec.deadline, true);
  if (ticket === undefined) return refuse(r, rec, keys, requestId);
  counters.count(keys, "held");
  if (bound !== undefined) counters.count(keys, "outage_held");
  if (!holdAndSettle(r, rec, keys, keys.main, ticket, w, requestId)) return;
  if (keys.scope === DEFAULT_SCOPE && rec.state === "released") ownScopeFirst(r, rec);
}

/**
 * A request of scope X released from default's queue (the node's pause held it, for X
 * ran then): X's own pause or maintenance, begun meanwhile, comes first for it, as for a
 * request that arrives now. Not sent, it gives back its place in flight and its window
 * slot unused, and is held in X's queue, or answered 503 in maintenance.
 */
function ownScopeFirst(r: number, rec: Record): void {
  const own = scopeOf();
  if (own === DEFAULT_SCOPE) return;
  const keys = keysFor(own);
  const mode = state.settle(keys);
  if (mode !== "paused" && mode !== "maintenance") return;
  inflight.leave();
  const lease = rec.lease;
  rec.lease = 0;
  if (lease > 0) release.returnLease(rec.keys, lease, "unused");
  forget(r);
  if (mode === "maintenance") {
    counters.count(keys, "rejected");
    return answer(r, undefined, keys, "maintenance");
  }
  return holdRequest(r, keys);
}

/**
 * Holds an admitted request (its ticket in `lane`) until rec.deadline, logs how it left,
 * and turns the outcome into what it does next (see settle); true: it goes upstream.
 */
function holdAndSettle(r: number, rec: Record, keys: ScopeKeys, lane: Lane, ticket: number, w: waiters.Waiter, requestId: string): boolean {
  rec.state = "holding";
  rec.waiter = w;
  const started = ngx.now();
  const laneNote = lane.name === "retry" ? " lane=retry" : "";
  const [outcome, lease] = release.hold(keys, lane, ticket, rec.deadline, w, `request_id=${requestId}`);
  rec.waiter = undefined;
  ngx.update_time();
  const waited = ngx.now() - started;
  counters.observeHold(keys, waited);
  // Pieces, not one string: ngx.log joins them in C, and drops them unread below `notice`.
  ngx.log(ngx.NOTICE, "intermission: leave request_id=", requestId, " scope=", keys.scope, laneNote, " waited=",
    string.format("%.3f", waited), "s outcome=", outcome);
  return settle(r, rec, keys, outcome, lease);
}

/** What a hold ended in becomes what the request does next; true: it goes upstream. */
function settle(r: number, rec: Record, keys: ScopeKeys, outcome: release.Outcome, lease: number): boolean {
  const cfg = settings.cfg;
  if (outcome === "released") {
    counters.count(keys, "released");
    rec.lease = lease;
    rec.released = ngx.now();
    rec.state = "released";
    inflight.enter();
    return true;
  }
  if (outcome === "aborted") {
    counters.count(keys, "aborted");
    rec.state = "answered";
    return ngx.exit(499);
  }
  if (outcome === "maintenance") {
    counters.count(keys, "maintenance");
    return answer(r, rec, keys, "maintenance");
  }
  if (outcome === "error") {
    // Its ticket could not be written again (the queue zone is full; release.ts logged
    // it): answered as a timeout would be with "reject", never forwarded while paused.
    counters.count(keys, "timed_out");
    return answer(r, rec, keys, "full");
  }
  counters.count(keys, "timed_out");
  if (cfg.on_timeout === "pass") {
    counters.count(keys, "passed");
    forward(r, rec);
    return true;
  }
  return answer(r, rec, keys, "timeout");
}

/** A request access() has seen before: an internal redirect, or a reused pointer. */
function reentered(r: number, seen: number | Record): boolean {
  const start = startTime();
  if (type(seen) === "number") {
    if (seen === start) return true;
    inflight.leave(); // the request that left this record never ran log(): settle it now
  } else {
    const rec = seen as Record;
    if (rec.start === start) return true;
    settleRecord(rec);
  }
  forget(r);
  return false;
}

/**
 * The access hook once some scope is not running, or on a redirect.
 *
 * The scope `default` is the whole node: its pause or maintenance (what a control
 * request naming no scope gets from a control location that sets none) applies to every
 * request whose own scope runs, which is then held in default's queue, in arrival order
 * with default's own requests. A scope's own pause or maintenance comes first for its
 * requests; `scope=X` narrows a pause to X. So the README's snippet, with a scope in the
 * protected location and none in the control location, protects its site.
 */
export function gate(): void {
  const r = requestKey();
  const seen = lookup(r);
  if (seen !== undefined) {
    if (type(seen) === "table" && (seen as Record).state === "retrying" && (seen as Record).start === startTime()) return replayed(r, seen as Record);
    if (reentered(r, seen)) return;
  }
  if (settings.cfg.store === "redis") fleet.sync!.awaitFirstSync();
  let keys = keysFor(scopeOf());
  let mode = state.settle(keys);
  if (keys.scope !== DEFAULT_SCOPE && mode !== "paused" && mode !== "maintenance") {
    const nodeKeys = keysFor(DEFAULT_SCOPE);
    const nodeMode = state.settle(nodeKeys);
    // A pause or maintenance of default holds the whole node, also a scope that drains or
    // is in an outage (its queue is not granted meanwhile: release.step). A running scope
    // also queues behind default's drain, in order. An outage of default is its own
    // upstream's, not the whole node's: other scopes run.
    const nodeStops = nodeMode === "paused" || nodeMode === "maintenance";
    if (nodeStops || (mode === "running" && nodeMode === "draining")) {
      keys = nodeKeys;
      mode = nodeMode;
    }
  }
  const passes = alwaysPasses(ngxVar.uri);
  if (mode === "running") {
    // Passed unheld while some other scope on the node is stopped (its own pause would
    // have held it): the signal that a pause named another scope than the site's, which
    // the status answers show and `intermission run` warns about.
    if (!passes) counters.passedUnheld(keys);
    return forward(r, undefined);
  }
  if (passes) return forward(r, undefined);
  if (mode === "maintenance") {
    counters.count(keys, "rejected");
    return answer(r, undefined, keys, "maintenance");
  }
  if (mode === "outage") {
    // Held without trying the upstream (no herd of connects); the prober decides. A
    // prober lost with its worker (or stopped in one that exited) is started again by the
    // next request, which is held, not answered at once, for that prober's first round.
    outage.ensureProber(keys);
    // But default is every location that sets no scope, whatever its upstream: a request
    // of default tries its own upstream, and is held (retry) only if that one failed too.
    if (keys.scope === DEFAULT_SCOPE) return forward(r, undefined);
    const bound = outage.holdSeconds(keys);
    if (bound === 0) {
      counters.count(keys, "rejected");
      counters.count(keys, "fail_fast");
      return answer(r, undefined, keys, "timeout");
    }
    return holdRequest(r, keys, bound);
  }
  return holdRequest(r, keys);
}

/** nginx's status for a request whose client closed the connection before the answer. */
const CLIENT_CLOSED = 499;

/**
 * How a released request's lease ends, from its status. A client that gave up first
 * (499) says nothing of the upstream: the slot comes back unused, neither a success (that
 * would undo a back-off and reset the unanswered budget while the upstream may hang) nor
 * a failure.
 */
function leaseEnd(status: number): release.LeaseEnd {
  if (status === CLIENT_CLOSED) return "unused";
  return settings.cfg.failure_statuses[status] === true ? "failure" : "success";
}

/**
 * The upstream connection of this request failed without sending it a byte
 * ($upstream_bytes_sent is 0 for every try): the application never saw it, so it is
 * safe to send again, whatever the method.
 */
function neverSent(): boolean {
  const sent = ngxVar.upstream_bytes_sent;
  if (sent === undefined || sent === "") return false;
  const [nonZero] = string.find(sent, "[1-9]");
  return nonZero === undefined;
}

/** nginx's internal redirects per request (NGX_HTTP_MAX_URI_CHANGES): one more is its own 500. */
const NGINX_REDIRECTS = 10;
/**
 * Internal redirects the README allows between the client and proxy_pass (a try_files
 * into a named location, say), besides the error_page jump to the retry location.
 */
const REDIRECTS_ALLOWED = 1;

/**
 * Retries at most for a request with `k` redirects on its way to proxy_pass. A retry
 * replays the request from its start (replay.ts), so it costs those k again, plus the
 * ngx.exec back and the error_page jump of its failure: 1 + k for the first sending, then
 * 2 + k per retry, all within nginx's ten. k = 1 (the README's bound): 2 retries, 8 of 10.
 */
function maxTries(k: number): number {
  return math.floor((NGINX_REDIRECTS - 1 - k) / (2 + k));
}

/**
 * Redirects the request has visibly used on its way to proxy_pass (nginx does not say
 * how many: r->uri_changes is a bitfield whose offset in ngx_http_request_t depends on
 * nginx's version and build, so not read through FFI): one before its first hold if it
 * was internal there with the client's own $uri and $args (a named location or a
 * redirect, not a rewrite), one after it if its $uri or $args changed before it failed.
 */
function redirectsSeen(rec: Record, asSent: boolean): number {
  const before = rec.internal === true && asSent ? 1 : 0;
  const after = (ngxVar.uri ?? "") !== rec.uri || (ngxVar.args ?? "") !== rec.args ? 1 : 0;
  return before + after;
}

/** Without an address to probe: share of the time left that retry k waits (the first, only the back-off). */
const TRY_SPREAD: { [tries: number]: number } = { 2: 0.5 };
/** After "not applied" (the port is open, the application is not ready): share of the time left that retry k waits. */
const NOT_APPLIED_SPREAD: { [tries: number]: number } = { 1: 0.25, 2: 0.5 };

/** Where the application's "not applied" answer points: the retry location (README). */
const RETRY_LOCATION = "@intermission_retry";

/**
 * The application said "I did not apply this request, send it again": an
 * X-Accel-Redirect to the retry location. nginx honours it (a named location keeps the
 * method and the buffered body, and discards the response's body), so the request is
 * here with bytes sent, but by the application's word as if it had never seen it.
 */
function notApplied(): boolean {
  return ngxVar.upstream_http_x_accel_redirect === RETRY_LOCATION;
}

/** A retry refused (tries or time used up, or the queue full): on_timeout says what the client gets. */
function refuseRetry(rec: Record, keys: ScopeKeys, status: number): never {
  // Its first hold ended "released" already, so this is a refusal, not an outcome of a hold.
  rec.state = "answered";
  counters.count(keys, "rejected");
  if (settings.cfg.on_timeout === "pass") return exitError(requestKey(), status >= 500 ? status : 502);
  return unavailable("timeout", settings.cfg.retry_after, "");
}

/**
 * The request retry() last answered with ngx.exit(status) (its pointer and start time):
 * if nginx sends it back to retry() by an error_page, it loops (see retry()). One pair per
 * worker, no table: the error_page jump follows the exit before this worker runs another
 * request's retry().
 */
const exited = { req: 0, start: 0 };

/** The error as nginx made it: ngx.exit, so that the server's own error_page applies. */
function exitError(r: number, status: number): never {
  exited.req = r;
  exited.start = startTime();
  return ngx.exit(status);
}

/** nginx's reason phrases for the statuses retry() answers. */
const REASON: { [status: number]: string } = { 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out" };

/** The error page nginx itself would send (server_tokens off), sent directly: no error_page applies. */
function sendError(status: number): never {
  exited.req = 0;
  const title = `${status} ${REASON[status] ?? "Bad Gateway"}`;
  ngx.status = status;
  ngx.header["Content-Type"] = "text/html";
  ngx.print(`<html>\r\n<head><title>${title}</title></head>\r\n<body>\r\n<center><h1>${title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n`);
  return ngx.exit(ngx.HTTP_OK);
}

/**
 * The gateway error nginx made, for the answer when the request is not retried. Inside
 * the error_page's target $status no longer says it (`error_page 502 504 = ...` leaves
 * the status to the target), so a proxy_read_timeout's 504 would go out as 502: the last
 * status of $upstream_status is the one nginx would have answered.
 */
function gatewayStatus(): number {
  const status = tonumber(ngxVar.status ?? "") ?? 0;
  if (status >= 500) return status;
  const [last] = string.match(ngxVar.upstream_status ?? "", "(%d+)%D*$");
  const upstream = tonumber(last ?? "") ?? 0;
  return upstream >= 500 ? upstream : 502;
}

/**
 * content_by_lua of the retry location (error_page 502 504 = @intermission_retry): a
 * released request whose upstream connection failed before a byte was sent, and that
 * can be sent again exactly as it was (replay.target), is sent back to where it started
 * by ngx.exec; its access() holds it at the head of the queue (the retry lane) and lets
 * it go once granted again (replayed). Any other request: the error as nginx made it.
 */
export function retry(): void {
  const r = requestKey();
  const failed = gatewayStatus();
  // Entered again for the same request: the retry location inherited the error_page that
  // led to it (the wiring at server level), so an ngx.exit(502) here comes straight back
  // and nginx would end the loop in a 500. The error goes out as nginx's own page instead.
  if (exited.req === r && exited.start === startTime()) return sendError(failed);
  const seen = lookup(r);
  const declined = notApplied();
  if (type(seen) === "number" && settings.cfg.outage_hold > 0 && (declined || neverSent())) {
    return holdNeverHeld(r, seen as number, failed, declined);
  }
  if (seen === undefined || type(seen) === "number" || (seen as Record).state !== "released" || !(declined || neverSent())) {
    return exitError(r, failed); // not ours to retry: the error as nginx made it
  }
  const rec = seen as Record;
  const keys = rec.keys;
  const requestId = rec.requestId ?? "-";
  const [path, args, why, asSent] = replay.target(rec.uri ?? "", rec.args ?? "");
  if (path === undefined) {
    // Left "released": log() gives back its place in flight and its lease, as for any 502.
    ngx.log(ngx.WARN, `intermission: request_id=${requestId} scope=${keys.scope} not retried: ${why}`);
    return exitError(r, failed);
  }
  // The attempt failed at the gateway: that shrinks the window and backs off.
  inflight.leave();
  const lease = rec.lease;
  rec.lease = 0;
  if (lease > 0) release.returnLease(keys, lease, "failure");
  else release.noteFailure(keys, true); // its scope may have been reclaimed since its release: made again
  ngx.update_time();
  const tries = (rec.tries ?? 0) + 1;
  rec.tries = tries;
  const most = maxTries(math.max(REDIRECTS_ALLOWED, redirectsSeen(rec, asSent)));
  if (tries > most) {
    // Each retry costs internal redirects, of which a request has ten (see maxTries).
    ngx.log(ngx.WARN, `intermission: request_id=${requestId} scope=${keys.scope} failed at the upstream ${most + 1} times, not retried again`);
    return refuseRetry(rec, keys, failed);
  }
  if (ngx.now() >= rec.deadline) return refuseRetry(rec, keys, failed);
  rec.state = "retrying";
  rec.failedAddr = declined ? undefined : ngxVar.upstream_addr;
  rec.notApplied = declined;
  rec.failStatus = failed;
  return ngx.exec(path, args);
}

/**
 * retry() of a request the hot path forwarded (never held) whose upstream connection
 * failed before a byte was sent, with outage_hold on: its scope on this node enters the
 * outage (outage.ts), and it is sent back to where it started and held in the retry lane,
 * as a released request that failed is. It has no capture from a first hold, so what a
 * replay must match is read here: $uri and $args in this named location are those of the
 * location that failed (an error_page to a named location keeps them), which is also
 * where access() forwarded it (nothing after the access phase changes them). The same
 * fidelity rules as any retry (replay.target): a request that cannot be sent again
 * exactly, or whose body is not held whole, gets the 502 nginx made.
 */
function holdNeverHeld(r: number, start: number, status: number, declined: boolean): void {
  const failed = status >= 500 ? status : 502;
  const keys = keysFor(scopeOf());
  const requestId = ngxVar.request_id ?? "-";
  const uri = ngxVar.uri ?? "";
  const args = ngxVar.args ?? "";
  const addr = ngxVar.upstream_addr;
  const [path, rawArgs, why] = replay.target(uri, args);
  if (path === undefined) {
    ngx.log(ngx.WARN, `intermission: request_id=${requestId} scope=${keys.scope} not held through the outage: ${why}`);
    return exitError(r, failed);
  }
  if (!declined && !outage.probeable(addr)) {
    // nginx's "no live upstreams" (every server of a group marked failed: max_fails) names
    // the group, not an address, for every request until fail_timeout: once per burst.
    logOnce(ngx.WARN, "unprobeable", `intermission: request_id=${requestId} scope=${keys.scope} not held through the outage: upstream address ${addr ?? "-"} cannot be probed (an upstream group with no live server: see the README, "Upstream groups of several servers")`);
    return exitError(r, failed);
  }
  ngx.update_time();
  // Its wait counts from its arrival: min(outage_hold, max hold) at most.
  const deadline = start + math.min(settings.cfg.outage_hold, maxHoldHere());
  if (ngx.now() >= deadline) return exitError(r, failed);
  // "Not applied": the application is up but not ready (its database, say): no outage
  // (its port accepts), the retry waits instead (replayed). Its scope may have no state
  // on this node (never stopped, or reclaimed): its ticket makes it (release.takeTicket).
  const mode = declined ? state.modeOf(keys) : outage.enter(keys, addr!);
  if (mode === undefined) return exitError(r, failed);
  // An outage older than outage_hold answers at once, as the gate does (a request of
  // default, which tries its upstream during its scope's outage, comes here).
  if (mode === "outage" && !declined && outage.outlasted(keys)) {
    counters.count(keys, "rejected");
    counters.count(keys, "fail_fast");
    return unavailable("timeout", settings.cfg.retry_after, "");
  }
  // From here it is no longer in flight (it failed); access() holds it again.
  inflight.leave();
  if (mode !== "outage" && !declined) release.noteFailure(keys); // a pause or release in progress: as any failed try
  const rec: Record = {
    keys, state: "retrying", lease: 0, start, deadline, tries: 1, requestId, uri, args,
    // As if redirected once on its way (the README's bound): the retry budget is the same.
    internal: true, failStatus: status, notApplied: declined,
  };
  remember(r, rec);
  if (!declined) counters.count(keys, "outage_held");
  return ngx.exec(path, rawArgs);
}

/**
 * access() of a request retry() sent back: if it arrived as it was first held, it is
 * held again at the head of the queue and goes on once granted (its location's
 * proxy_pass sends it); if not (a rewrite that depends on more than the request), it is
 * answered the 502 it would have had.
 */
function replayed(r: number, rec: Record): void {
  const keys = rec.keys;
  const requestId = rec.requestId ?? "-";
  const status = rec.failStatus ?? 502;
  const uri = ngxVar.uri ?? "";
  const args = ngxVar.args ?? "";
  if (uri !== rec.uri || args !== rec.args) {
    ngx.log(ngx.WARN, `intermission: request_id=${requestId} scope=${keys.scope} not retried: sent back, it arrived as ${uri}?${args}, not as first held (${rec.uri}?${rec.args})`);
    rec.state = "answered";
    return ngx.exit(status >= 500 ? status : 502);
  }
  // The waiter first, as holdRequest does: nothing to undo if it cannot be had.
  const [w, err] = waiters.newWaiter(keys);
  if (w === undefined) {
    ngx.log(ngx.ERR, `intermission: cannot hold request_id=${requestId} again: ${err}`);
    rec.state = "answered";
    return ngx.exit(502);
  }
  watchAbort();
  // The next try waits until the address that failed accepts connections again (one
  // timer per scope probes it), so that the few tries there are are not spent on a port
  // that is still closed. The whole release waits with it: the queue keeps its order.
  // An address that cannot be probed: later tries wait a share of the time left instead.
  const addr = rec.failedAddr;
  if (rec.notApplied === true && ngx.now() < rec.deadline) {
    // The application is up but said it could not apply it: wait for the ready probe if
    // there is one, else a share of the time left, before it goes again.
    if (settings.cfg.ready_probe !== undefined && !ready.waiting(keys)) ready.startWaiting(keys, ngx.now());
    else release.backOffAtLeast(keys, (rec.deadline - ngx.now()) * (NOT_APPLIED_SPREAD[rec.tries ?? 1] ?? 0.5));
  } else if (ngx.now() < rec.deadline && (addr === undefined || !ready.waitForConnect(keys, addr, rec.deadline))) {
    const spread = TRY_SPREAD[rec.tries ?? 1] ?? 0;
    if (spread > 0) release.backOffAtLeast(keys, (rec.deadline - ngx.now()) * spread);
  }
  let ticket: number | undefined;
  if (ngx.now() < rec.deadline) [ticket] = release.admit(keys, keys.retry, rec.deadline);
  if (ticket === undefined) {
    return refuseRetry(rec, keys, status);
  }
  counters.count(keys, "retried");
  // Released: access() returns and the location sends it; otherwise settle() answered it.
  holdAndSettle(r, rec, keys, keys.retry, ticket, w, requestId);
}

/** The response starts: a released request's window lease comes back. */
export function responseStarted(rec: Record): void {
  if (rec.lease > 0) {
    const lease = rec.lease;
    rec.lease = 0;
    release.returnLease(rec.keys, lease, leaseEnd(ngx.status), ngx.now() - (rec.released ?? ngx.now()));
  }
}

/** The request is done (log phase), or its record was found stale: undo what it took. */
export function settleRecord(rec: Record): void {
  if (rec.state === "holding") {
    // Its coroutine was killed while held (worker_shutdown_timeout): leave the queue.
    // Its client loses the connection, as if it had given up: that is the hold's outcome.
    if (rec.waiter !== undefined) {
      release.abandon(rec.waiter);
      counters.count(rec.keys, "aborted");
    }
  } else if (rec.state === "released" || rec.state === "forwarded") {
    inflight.leave();
    responseStarted(rec);
  }
  rec.state = "answered";
}
