// Keeps this node's shared dict in step with the fleet's state in Redis.
//
// One loop per node, in worker 0 (respawned with it by the master; on reload the new
// worker 0 takes over and the old one stops). It subscribes to the events channel, so
// a change made anywhere reaches this node's hot path within a Redis round trip, and on
// every read timeout (1 s, 0.1 s while any scope is not running) it reconciles all
// scopes and publishes this node's heartbeat. If Redis is unreachable the node keeps
// its last known state and retries with back-off: one connect timeout at a time, in one
// worker, never on a request.
import * as cjson from "cjson.safe";
import { zones, keysFor, knownScopes, num, BUSY_KEY } from "../shm";
import { settings } from "../settings";
import { lock, unlock } from "../lock";
import * as state from "../state";
import * as inflight from "../inflight";
import { connect, release, failed, key } from "./connection";
import * as remote from "./remote";

/** Set by setup() on a cold start: requests wait for the first sync (bounded). */
export const PENDING_KEY = "fleet|pending";
const SYNCED_KEY = "fleet|synced";
const ERROR_KEY = "fleet|error";
const NODE_TTL_MS = 3000;

export const node = { id: "" };

/** Called by setup() (init phase, master): hold the first requests until the first sync. */
export function markPending(): void {
  const zone = zones.state;
  const [synced] = zone.get(SYNCED_KEY);
  if (synced !== undefined) return; // a reload: the shared dict already has the state
  const [added] = zone.add(PENDING_KEY, true);
  if (added) zone.incr(BUSY_KEY, 1, 0);
}

function clearPending(): void {
  const zone = zones.state;
  const [pending] = zone.get(PENDING_KEY);
  if (pending === undefined) return;
  const [token] = lock();
  const [still] = zone.get(PENDING_KEY);
  if (still !== undefined) {
    zone.delete(PENDING_KEY);
    const [left] = zone.incr(BUSY_KEY, -1, 0);
    if (left !== undefined && left <= 0) zone.delete(BUSY_KEY);
  }
  if (token !== undefined) unlock(token);
}

/** In the slow path: waits (bounded) while the node has not had its first sync. */
export function awaitFirstSync(): void {
  const cfg = settings.cfg.redis!;
  const deadline = ngx.now() + cfg.connect_timeout + cfg.read_timeout + 0.5;
  while (zones.state.get(PENDING_KEY)[0] !== undefined && ngx.now() < deadline) {
    ngx.sleep(0.005);
    ngx.update_time();
  }
}

/** Makes the local state of one scope what the fleet says. */
export function apply(scope: string, rec: remote.RemoteRecord | undefined): void {
  const keys = keysFor(scope);
  const local = state.modeOf(keys);
  if (rec === undefined) {
    if (local === "paused" || local === "maintenance") state.resume(keys);
    return;
  }
  const snap = state.snapshot(keys);
  // Already so (the node that made the change applied it before publishing).
  if (local === rec.mode && snap.reason === rec.reason && math.abs(snap.until - rec.until) < 0.01) return;
  const ttl = rec.until > 0 ? math.max(0.001, rec.until - ngx.now()) : 0;
  if (rec.mode === "paused") state.pause(keys, ttl, rec.reason);
  else state.maintenance(keys, ttl, rec.reason);
}

function reconcile(): LuaMultiReturn<[boolean, string | undefined]> {
  const [all, err] = remote.readAll();
  if (all === undefined) return $multi(false, err);
  for (const [scope, rec] of pairs(all)) apply(scope as string, rec === false ? undefined : rec as remote.RemoteRecord);
  // Scopes this node knows that the fleet no longer lists are running.
  for (const scope of knownScopes()) {
    if (all[scope] === undefined) apply(scope, undefined);
  }
  return $multi(true, undefined);
}

function heartbeat(): void {
  const held: { [scope: string]: number } = {};
  let total = 0;
  for (const scope of knownScopes()) {
    const n = num(zones.state, keysFor(scope).held);
    held[scope] = n;
    total += n;
  }
  const [body] = cjson.encode({ id: node.id, at: ngx.now(), held, held_total: total, in_flight: inflight.total() });
  const [red] = connect();
  if (red === undefined || body === undefined) return;
  red.init_pipeline(2);
  red.set(key("node", node.id), body, "PX", NODE_TTL_MS);
  red.sadd(key("nodes"), node.id);
  const [replies] = red.commit_pipeline();
  if (replies === undefined) red.close();
  else release(red);
}

function anyBusy(): boolean {
  return zones.state.get(BUSY_KEY)[0] !== undefined;
}

/** One subscription, until Redis fails or the worker exits. */
function session(): string {
  const [sub, err] = connect();
  if (sub === undefined) return err!;
  const channel = key(remote.CHANNEL_SUFFIX);
  const [ok, subErr] = sub.subscribe(channel);
  if (ok === undefined || ok === false) {
    sub.close();
    return `redis SUBSCRIBE: ${subErr}`;
  }
  // Subscribed first, then read everything: no change can fall between the two.
  const [synced, syncErr] = reconcile();
  if (!synced) {
    sub.close();
    return syncErr!;
  }
  zones.state.set(SYNCED_KEY, true);
  zones.state.delete(ERROR_KEY);
  clearPending();
  heartbeat();
  let lastBeat = ngx.now();

  while (!ngx.worker.exiting()) {
    sub.set_timeout(anyBusy() ? 100 : 1000);
    const [reply, readErr] = sub.read_reply();
    if (reply !== undefined) {
      const r = reply as string[];
      if (r[0] === "message" && type(r[2]) === "string") {
        const [, , scope, record] = string.find(r[2], "^([^\n]*)\n(.*)$");
        if (scope !== undefined) apply(scope as string, remote.decode(record));
      }
    } else if (readErr !== "timeout") {
      sub.close();
      return `redis subscription: ${readErr}`;
    }
    ngx.update_time();
    const interval = anyBusy() ? 0.1 : 1;
    if (ngx.now() - lastBeat >= interval) {
      const [fine, recErr] = reconcile();
      if (!fine) {
        sub.close();
        return recErr!;
      }
      heartbeat();
      lastBeat = ngx.now();
    }
  }
  sub.close();
  return "";
}

function loop(this: void, premature: boolean): void {
  if (premature) return;
  let backoff = 0.1;
  let reported = false;
  while (!ngx.worker.exiting()) {
    const [ok, result] = pcall(session);
    if (ngx.worker.exiting()) break;
    const err = ok ? (result as string) : `sync failed: ${tostring(result)}`;
    zones.state.set(ERROR_KEY, err);
    // A cold start must not wait for Redis forever: fail open after the first attempt.
    clearPending();
    if (!reported) {
      ngx.log(ngx.ERR, `intermission: fleet: ${err}; keeping the last known state and retrying`);
      reported = true;
    }
    ngx.sleep(backoff);
    backoff = math.min(backoff * 2, 2);
  }
}

/** init_worker: worker 0 runs the node's sync loop. */
export function start(): void {
  if (ngx.worker.id() !== 0) return;
  const [ok, err] = ngx.timer.at(0, loop);
  if (!ok) ngx.log(ngx.ERR, `intermission: fleet: cannot start the sync loop: ${err}`);
}

/** The last sync error, if Redis is failing now. */
export function lastError(): string | undefined {
  const [e] = zones.state.get(ERROR_KEY);
  return e as string | undefined;
}

/** The fleet's nodes as their heartbeats say. */
export function fleetStatus(): LuaMultiReturn<[{ [k: string]: unknown } | undefined, string | undefined]> {
  const [red, err] = connect();
  if (red === undefined) return $multi(undefined, err);
  const [ids, e1] = red.smembers(key("nodes"));
  if (failed(red, ids)) return $multi(undefined, `redis: ${e1}`);
  const nodes: unknown[] = [];
  let held = 0;
  let inFlight = 0;
  for (const id of ids as string[]) {
    const [v, getErr] = red.get(key("node", id));
    if (failed(red, v)) return $multi(undefined, `redis: ${getErr}`);
    if (v === ngx.null) {
      red.srem(key("nodes"), id); // it stopped publishing: drop it
    } else {
      const [hb] = cjson.decode(v as string);
      if (type(hb) === "table") {
        const h = hb as { held_total: number; in_flight: number };
        nodes.push(hb);
        held += h.held_total;
        inFlight += h.in_flight;
      }
    }
  }
  release(red);
  return $multi({ nodes, node_count: nodes.length, held, in_flight: inFlight }, undefined);
}
