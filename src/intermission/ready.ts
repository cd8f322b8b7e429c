// The ready probe: after a resume, held requests wait until the backend answers.
//
// One prober per scope and node (a shared-dict add decides which worker runs it), a
// timer with a cosocket, never per request. It asks `ready_probe.url` every `interval`
// seconds; after `successes` 2xx answers in a row it opens the release (readyUntil = 0),
// and when `timeout` passes first it opens it anyway and says so. Meanwhile the release
// step sees readyUntil in the future and grants nothing (release.ts, windowHasRoom).
import { ScopeKeys, zones, keysFor, num } from "./shm";
import { settings, ReadyProbe } from "./settings";
import * as counters from "./counters";
import * as waiters from "./waiters";
import * as liveness from "./liveness";

/** "#": an internal key, out of every scope's reach (see shm.ts). */
const PROBER_PREFIX = "#prober|";

/** Starts waiting for readiness (called under the scope's lock, at resume). */
export function startWaiting(keys: ScopeKeys, now: number): void {
  const probe = settings.cfg.ready_probe!;
  zones.state.safe_set(keys.readyUntil, now + probe.timeout);
  const err = startProber(keys, PROBER_PREFIX, probe.timeout, prober, probe.url);
  if (err !== undefined) ngx.log(ngx.ERR, `intermission: cannot start the ready probe for scope ${keys.scope}, releasing at once: ${err}`);
}

/** A prober timer's function: `target` is what it probes (the ready URL, or the failed $upstream_addr). */
type ProberFn = (this: void, premature: boolean, scope: string, target: string) => void;

/**
 * Starts a prober timer for the scope unless this node runs one already (a shared-dict
 * add under `prefix`: its value is the target, its flags the worker's pid, so that a
 * prober lost with its worker is started again: ensureProbers); the caller has set
 * readyUntil, which holds the release until the prober ends (endProber). Returns the
 * error when no timer could be had: the wait is lifted then.
 */
function startProber(keys: ScopeKeys, prefix: string, seconds: number, fn: ProberFn, target: string): string | undefined {
  const [mine] = zones.state.safe_add(prefix + keys.scope, target, seconds + 5, liveness.me());
  if (!mine) return undefined;
  const [ok, err] = ngx.timer.at(0, fn, keys.scope, target);
  if (ok) return undefined;
  zones.state.delete(prefix + keys.scope);
  zones.state.safe_set(keys.readyUntil, 0);
  return err;
}

/** Seconds a takeover's mark lives: one taker per lost prober. */
const TAKEOVER_LEASE = 5;

/**
 * While the release waits (readyUntil), a prober lost with its worker (kill -9, a crash:
 * its claim stays, naming a pid that is gone) is started again here, by the watcher of a
 * worker that holds requests of the scope. Without it the release would wait until
 * readyUntil: the ready probe's timeout, or the failed request's deadline (max_hold).
 */
export function ensureProbers(keys: ScopeKeys): void {
  if (!waiting(keys) || ngx.worker.exiting()) return;
  takeOver(keys, PROBER_PREFIX, prober);
  takeOver(keys, CONNECT_PREFIX, connectProber);
}

function takeOver(keys: ScopeKeys, prefix: string, fn: ProberFn): void {
  const st = zones.state;
  const key = prefix + keys.scope;
  const [target, holder] = st.get(key);
  const pid = holder as number | undefined;
  if (type(target) !== "string" || !liveness.gone(pid, ngx.now())) return;
  // One taker per lost prober: the others see the add fail.
  const [taker] = st.safe_add(`${key}|${pid}`, true, TAKEOVER_LEASE);
  if (!taker) return;
  const [set] = st.safe_set(key, target, math.max(num(st, keys.readyUntil) - ngx.now(), 0) + 5, liveness.me());
  if (!set) return;
  ngx.log(ngx.NOTICE, `intermission: ${prefix === CONNECT_PREFIX ? "connect" : "ready"} prober of scope ${keys.scope} taken over from worker ${pid} (gone)`);
  const [ok, err] = ngx.timer.at(0, fn, keys.scope, target as string);
  if (ok) return;
  endProber(keys, prefix);
  ngx.log(ngx.ERR, `intermission: cannot start the prober of scope ${keys.scope} again, releasing at once: ${err}`);
}

/** A prober is done: the release goes on, and this worker's watcher looks at once. */
function endProber(keys: ScopeKeys, prefix: string): void {
  zones.state.safe_set(keys.readyUntil, 0);
  zones.state.delete(prefix + keys.scope);
  waiters.poke();
}

interface Target { host: string; port: number; path: string }

function parseUrl(url: string): Target | undefined {
  const [host, port, path] = string.match(url, "^http://([^:/]+):?(%d*)(.*)$");
  if (host === undefined) return undefined;
  return { host, port: port === "" ? 80 : tonumber(port)!, path: path === "" ? "/" : path! };
}

/** One GET of the probe URL: true for a 2xx status. */
function probeOnce(target: Target, timeout: number): LuaMultiReturn<[boolean, string]> {
  const sock = ngx.socket.tcp();
  sock.settimeout(timeout * 1000);
  const [ok, err] = sock.connect(target.host, target.port);
  if (ok === undefined) return $multi(false, `connect: ${err}`);
  const [sent, sendErr] = sock.send(`GET ${target.path} HTTP/1.0\r\nHost: ${target.host}\r\nUser-Agent: intermission-ready-probe\r\nConnection: close\r\n\r\n`);
  if (sent === undefined) {
    sock.close();
    return $multi(false, `send: ${sendErr}`);
  }
  const [line, readErr] = sock.receive("*l");
  sock.close();
  if (line === undefined) return $multi(false, `read: ${readErr}`);
  const [status] = string.match(line, "^HTTP/%d%.%d (%d%d%d)");
  if (status === undefined) return $multi(false, `not an HTTP answer: ${string.sub(line, 1, 60)}`);
  const code = tonumber(status)!;
  return $multi(code >= 200 && code < 300, `status ${status}`);
}

function prober(this: void, premature: boolean, scope: string, _url: string): void {
  const keys = keysFor(scope);
  const probe: ReadyProbe = settings.cfg.ready_probe!;
  const started = ngx.now();
  let streak = 0;
  let failures = 0;
  let last = "";
  const target = parseUrl(probe.url)!;
  while (!premature && !ngx.worker.exiting()) {
    ngx.update_time();
    const until = num(zones.state, keys.readyUntil);
    if (until === 0) break; // a pause, maintenance or another resume settled it
    if (ngx.now() >= until) {
      ngx.log(ngx.WARN, `intermission: ready probe ${probe.url} for scope ${scope} timed out after ${probe.timeout}s (${last}); releasing the held requests anyway`);
      break;
    }
    const [good, detail] = probeOnce(target, math.min(probe.interval * 4, 2));
    last = detail;
    if (good) {
      streak++;
      if (streak >= probe.successes) {
        ngx.log(ngx.NOTICE, `intermission: ready probe ${probe.url} for scope ${scope} passed ${streak}x after ${string.format("%.3f", ngx.now() - started)}s; releasing`);
        break;
      }
    } else {
      streak = 0;
      failures++;
      counters.count(keys, "probe_failures");
    }
    ngx.sleep(probe.interval);
  }
  ngx.update_time();
  counters.add(keys, "ready_wait_seconds", ngx.now() - started);
  endProber(keys, PROBER_PREFIX);
  if (failures > 0) ngx.log(ngx.INFO, `intermission: ready probe for scope ${scope}: ${failures} failed attempt(s)`);
}

// ---- after a failed upstream connection ---------------------------------------------

const CONNECT_PREFIX = "#connect|";
const CONNECT_FIRST = 0.05;
const CONNECT_MAX = 0.5;

/** Addresses probed at most for one failed try (an upstream group's servers, backups included). */
const MAX_ADDRESSES = 16;

export interface Address { host: string; port: number }

/** One address of $upstream_addr: host and port (0 for a unix socket path), or undefined (a group name). */
function parseAddress(one: string): Address | undefined {
  if (string.sub(one, 1, 5) === "unix:") return { host: one, port: 0 };
  const [v6, v6port] = string.match(one, "^%[(.+)%]:(%d+)$");
  if (v6 !== undefined) return { host: v6, port: tonumber(v6port)! };
  const [host, port] = string.match(one, "^([^:]+):(%d+)$");
  if (host === undefined) return undefined;
  return { host, port: tonumber(port)! };
}

/**
 * Every address of $upstream_addr ("a:1, b:2 : c:3": a comma between the servers one
 * try went through, backups included, " : " between the groups of internal redirects),
 * each once, in order. A group name (no live server) is not an address.
 */
export function addressesOf(addr: string): Address[] {
  const list: Address[] = [];
  const seen: { [a: string]: true | undefined } = {};
  for (const [one] of string.gmatch(addr, "[^%s,]+")) {
    if (one !== ":" && seen[one] === undefined && list.length < MAX_ADDRESSES) {
      seen[one] = true;
      const a = parseAddress(one);
      if (a !== undefined) list.push(a);
    }
  }
  return list;
}

/**
 * A released request's upstream connection failed: the scope's release waits (as for the
 * ready probe, readyUntil) until ANY address of the failed try (`$upstream_addr`: the
 * group's primary servers and its backups) accepts a TCP connection again, or `until`.
 * One timer per scope and node connects, never a request. False: no address can be
 * probed (the caller backs off instead).
 */
export function waitForConnect(keys: ScopeKeys, addr: string, until: number): boolean {
  if (addressesOf(addr).length === 0) return false;
  const st = zones.state;
  if (num(st, keys.readyUntil) < until) st.safe_set(keys.readyUntil, until);
  const err = startProber(keys, CONNECT_PREFIX, until - ngx.now(), connectProber, addr);
  if (err === undefined) return true;
  ngx.log(ngx.ERR, `intermission: cannot probe ${addr} for scope ${keys.scope}: ${err}`);
  return false;
}

/** Whether the address accepts a TCP connection within timeoutMs (closed at once). */
export function accepts(a: Address, timeoutMs = 500): boolean {
  // A unix socket whose file is gone: nginx logs every connect to it at [crit], twice a
  // second for the whole outage. The file's absence says as much, silently (a socket
  // cannot be opened as a file: "No such device or address" means it is there).
  if (a.port === 0) {
    const [f, err] = io.open(string.sub(a.host, 6));
    if (f !== undefined) f.close();
    else if (err !== undefined) {
      const [missing] = string.find(err, "No such file", 1, true);
      if (missing !== undefined) return false;
    }
  }
  const sock = ngx.socket.tcp();
  sock.settimeout(timeoutMs);
  const [ok] = a.port > 0 ? sock.connect(a.host, a.port) : sock.connect(a.host);
  if (ok === undefined) return false;
  sock.close();
  return true;
}

/**
 * Probes the failed addresses, each once a round, until one accepts or the wait ends.
 * It goes on in a worker that is exiting (a reload, a binary upgrade): lifting the wait
 * there would release the held requests into the port that is still closed and spend
 * their tries at once. A running timer keeps its worker alive until it returns, and it
 * returns by the failed request's deadline at the latest (or worker_shutdown_timeout).
 * (`premature` is true only for a timer that had not started when its worker began to
 * exit: it probes all the same.)
 */
function connectProber(this: void, _premature: boolean, scope: string, addr: string): void {
  const keys = keysFor(scope);
  const started = ngx.now();
  const addresses = addressesOf(addr);
  let pause = CONNECT_FIRST;
  for (;;) {
    ngx.update_time();
    const until = num(zones.state, keys.readyUntil);
    if (until === 0) break; // a pause, maintenance or a resume settled it
    if (ngx.now() >= until) {
      ngx.log(ngx.WARN, `intermission: upstream ${addr} for scope ${scope} refused connections for ${string.format("%.1f", ngx.now() - started)}s; trying the held requests anyway`);
      break;
    }
    let open: Address | undefined;
    for (const a of addresses) {
      if (accepts(a)) {
        open = a;
        break;
      }
    }
    if (open !== undefined) {
      ngx.update_time();
      ngx.log(ngx.NOTICE, `intermission: upstream ${open.port > 0 ? `${open.host}:${open.port}` : open.host} for scope ${scope} accepts connections again after ${string.format("%.3f", ngx.now() - started)}s; releasing`);
      break;
    }
    ngx.sleep(pause);
    pause = math.min(pause * 2, CONNECT_MAX);
  }
  endProber(keys, CONNECT_PREFIX);
}

/** Whether the release of this scope waits for the ready probe now. */
export function waiting(keys: ScopeKeys): boolean {
  return num(zones.state, keys.readyUntil) > ngx.now();
}
