// Keeps this node's shared dict in step with the fleet's state in Redis.
//
// One loop per node, in worker 0 (respawned with it by the master; on reload the new
// worker 0 takes over and the old one stops). It subscribes to the events channel, so a
// change made anywhere reaches this node's hot path within a Redis round trip, and costs
// Redis nothing while nothing changes. Every few seconds (CHECK_IDLE, or CHECK_STOPPED
// while a scope here is paused or in maintenance, with jitter so a fleet's nodes spread
// out) it refreshes its heartbeat, reads the fleet's change counter and publishes a probe
// to itself, whose arrival shows the subscription alive; only when the counter is not the
// one it has seen does it read the scopes. If Redis is unreachable the node keeps its last known state
// and retries with back-off: one connect timeout at a time, in one worker, never on a
// request.
import * as cjson from "cjson.safe";
import { zones, keysFor, knownScopes, BUSY_KEY, FLEET_SHARE_KEY, FLEET_PENDING_KEY, FLEET_SYNCED_KEY, FLEET_ERROR_KEY, num } from "../shm";
import { settings } from "../settings";
import { lock, unlock } from "../lock";
import * as state from "../state";
import { heldNow } from "../release";
import * as inflight from "../inflight";
import { connect, release, failed, key, Redis } from "./connection";
import * as remote from "./remote";
import * as unsettled from "./unsettled";

/** Set by setup() on a cold start: requests wait for the first sync (bounded). */
export const PENDING_KEY = FLEET_PENDING_KEY;
const SYNCED_KEY = FLEET_SYNCED_KEY;
const ERROR_KEY = FLEET_ERROR_KEY;
/** A heartbeat lives this long unless refreshed: a node that stops drops out of status after it. */
export const NODE_TTL_MS = 15000;
/** Seconds between checks while every scope here runs, and while one is paused or in maintenance (each x0.8-1.2). */
export const CHECK_IDLE = 5;
export const CHECK_STOPPED = 1;
/** While a scope is stopped: how often the loop looks whether its in-flight count moved (for the fleet's drain). */
const WAKE_STOPPED = 0.1;
/** Otherwise, how long one read on the subscription waits at most. */
const WAKE_IDLE = 1;
const BACKOFF_MAX = 2;

export const node = { id: "" };

/** Called by setup() (init phase, master): hold the first requests until the first sync. */
export function markPending(): void {
  const zone = zones.state;
  const [synced] = zone.get(SYNCED_KEY);
  if (synced !== undefined) return; // a reload: the shared dict already has the state
  // safe_add, and incr without an init (BUSY_KEY exists from setup() on): an incr that
  // creates its key can evict like add (lua-nginx-module's docs); one on a number in
  // place never allocates. The state zone never evicts (shm.ts).
  const [added] = zone.safe_add(PENDING_KEY, true);
  if (added) zone.incr(BUSY_KEY, 1);
}

function clearPending(): void {
  const zone = zones.state;
  const [pending] = zone.get(PENDING_KEY);
  if (pending === undefined) return;
  const [token] = lock();
  const [still] = zone.get(PENDING_KEY);
  if (still !== undefined) {
    zone.delete(PENDING_KEY);
    // Never deleted (see mode.ts): a delete could race another scope's increment.
    zone.incr(BUSY_KEY, -1);
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

/** What apply() did: nothing, a pause or maintenance, or a resume. */
export type Applied = "none" | "stopped" | "resumed";

/**
 * Makes the local state of one scope what the fleet says. The deadline is this node's
 * clock plus the seconds the record has left: no other node's clock is read. Only the
 * shared dict is written here (what the hot path reads); the caller does the rest after.
 */
export function apply(scope: string, rec: remote.RemoteRecord | undefined): Applied {
  const keys = keysFor(scope);
  const local = state.modeOf(keys);
  // The clock as the change lands, not as the event loop last read it: `since` and the
  // deadline are this moment's.
  ngx.update_time();
  if (rec === undefined) {
    if (local !== "paused" && local !== "maintenance") return "none";
    // The share is refreshed after the resume (see session); only a node that never
    // computed one asks before it releases anything.
    if (settings.cfg.fleet_release_window !== undefined && num(zones.state, FLEET_SHARE_KEY) === 0) refreshShare();
    state.resume(keys);
    return "resumed";
  }
  const until = rec.ttl > 0 ? ngx.now() + rec.ttl : 0;
  // Already so (the node that made the change applied it before publishing; a reconcile
  // finds what a message brought): a deadline within a quarter second is the same one.
  if (local === rec.mode) {
    const zone = zones.state;
    const was = num(zone, keys.until);
    const sameDeadline = until === 0 ? was === 0 : was > 0 && math.abs(was - until) < 0.25;
    if (sameDeadline && zone.get(keys.reason)[0] === rec.reason) return "none";
  }
  if (rec.mode === "paused") state.pause(keys, rec.ttl, rec.reason);
  else state.maintenance(keys, rec.ttl, rec.reason);
  return "stopped";
}

/** This worker's view of the fleet (numbers only: no connection is kept in module state). */
const seen = {
  /** The fleet's change counter as of the last change this node applied. */
  version: -1,
  /** What the last heartbeat said, and when it went. */
  beatVersion: -1,
  beatInFlight: -1,
  beatAt: 0,
  /** SET ... GET (Redis 6.2+); false after an older Redis refused it. */
  setGet: true,
  seed: 0,
  /** The last probe sent to this node's own channel. */
  probe: 0,
  /** fleet_release_window: the share is to be computed again once the channel is quiet. */
  shareDue: false,
};

/** The channel names (set by session: no string is built per message). */
const channels = { events: "", probe: "" };

/** A factor from 0.8 to 1.2 (Park-Miller, seeded per worker), so a fleet's timers drift apart. */
function jitter(): number {
  if (seen.seed === 0) seen.seed = (ngx.worker.pid() * 7919 + math.floor(ngx.now() * 1000)) % 2147483646 + 1;
  seen.seed = (seen.seed * 16807) % 2147483647;
  return 0.8 + 0.4 * (seen.seed / 2147483647);
}

function reconcile(): LuaMultiReturn<[boolean, string | undefined]> {
  const [all, version, err] = remote.readAll();
  if (all === undefined) return $multi(false, err);
  for (const [scope, rec] of pairs(all)) noteApplied(apply(scope as string, rec));
  // Scopes this node knows that the fleet does not list as stopped are running.
  for (const scope of knownScopes()) {
    if (all[scope] === undefined) noteApplied(apply(scope, undefined));
  }
  seen.version = version;
  return $multi(true, undefined);
}

/**
 * Publishes this node's heartbeat (one SET; SADD to the node list only when the key had
 * lapsed) and, with `readVersion`, reads the fleet's change counter in the same round
 * trip; with `probe`, then publishes it to this node's probe channel.
 */
function heartbeat(readVersion: boolean, probe?: number): LuaMultiReturn<[boolean, number | undefined, string | undefined]> {
  const held: { [scope: string]: number } = {};
  let total = 0;
  for (const scope of knownScopes()) {
    const n = heldNow(keysFor(scope));
    held[scope] = n;
    total += n;
  }
  const inFlight = inflight.total();
  const [body] = cjson.encode({ id: node.id, at: ngx.now(), held, held_total: total, in_flight: inFlight, version: seen.version });
  if (body === undefined) return $multi(false, undefined, "cannot encode the heartbeat");
  const [red, err] = connect();
  if (red === undefined) return $multi(false, undefined, err);
  const nodeKey = key("node", node.id);
  red.init_pipeline(3);
  if (seen.setGet) red.set(nodeKey, body, "PX", NODE_TTL_MS, "GET");
  else {
    red.set(nodeKey, body, "PX", NODE_TTL_MS);
    red.sadd(key("nodes"), node.id);
  }
  if (readVersion) red.get(key("version"));
  if (probe !== undefined) red.publish(key("probe", node.id), tostring(probe));
  const [replies, pipeErr] = red.commit_pipeline();
  if (replies === undefined) {
    red.close();
    return $multi(false, undefined, `redis heartbeat: ${pipeErr}`);
  }
  const first = replies[0];
  if (seen.setGet && type(first) === "table") {
    // Redis before 6.2 has no SET ... GET ("ERR syntax error"): from now on SET and SADD.
    const setErr = tostring((first as unknown as [false, string])[1]);
    if (string.find(setErr, "syntax", 1, true)[0] === undefined) {
      release(red);
      return $multi(false, undefined, `redis heartbeat: ${setErr}`);
    }
    seen.setGet = false;
    red.sadd(key("nodes"), node.id);
  } else if (seen.setGet && first === ngx.null) {
    // No heartbeat of ours was there (a start, or it lapsed and status dropped us): list us.
    red.sadd(key("nodes"), node.id);
  }
  let version: number | undefined;
  if (readVersion) {
    const v = replies[replies.length - (probe !== undefined ? 2 : 1)];
    if (type(v) === "table") {
      release(red);
      return $multi(false, undefined, `redis GET version: ${tostring((v as unknown as [false, string])[1])}`);
    }
    version = v === ngx.null ? 0 : (tonumber(v as string) ?? 0);
  }
  release(red);
  seen.beatVersion = seen.version;
  seen.beatInFlight = inFlight;
  seen.beatAt = ngx.now();
  return $multi(true, version, undefined);
}

/** Some scope on this node is paused or in maintenance (not just draining or waiting for the first sync). */
function anyStopped(): boolean {
  const [busy] = zones.state.get(BUSY_KEY);
  if (busy === undefined || busy === 0) return false;
  for (const scope of knownScopes()) {
    const mode = state.modeOf(keysFor(scope));
    if (mode === "paused" || mode === "maintenance") return true;
  }
  return false;
}

/** fleet_release_window: a change applied here makes the share due for a refresh. */
function noteApplied(applied: Applied): Applied {
  if (applied !== "none" && settings.cfg.fleet_release_window !== undefined) seen.shareDue = true;
  return applied;
}

/**
 * One message from the channel: what it applied, and false when it shows that a change
 * was missed (its version skips one), so the caller reconciles.
 */
function onMessage(reply: RedisReply[]): LuaMultiReturn<[boolean, Applied]> {
  if (reply[0] !== "message" || reply[1] !== channels.events || type(reply[2]) !== "string") return $multi(true, "none");
  const [, , scope, body] = string.find(reply[2] as string, "^([^\n]*)\n(.*)$");
  if (scope === undefined) return $multi(true, "none");
  const [rec, version] = remote.decode(body);
  if (version !== undefined) {
    // Published before the reconcile that already read it: applying it now would undo a later change.
    if (version <= seen.version) return $multi(true, "none");
    const gap = version > seen.version + 1;
    const applied = noteApplied(apply(scope as string, rec));
    seen.version = version;
    return $multi(!gap, applied);
  }
  return $multi(true, noteApplied(apply(scope as string, rec))); // from a node of an earlier version
}

/**
 * Reads the subscription until this node's probe `token` comes back, applying the
 * changes before it. Not a PING on the subscription: a Redis that stops with a command of
 * ours unread resets the connection, which nginx logs as an error; a message we asked
 * Redis to send us also proves that what is published reaches us.
 */
function awaitProbe(sub: Redis, token: number): LuaMultiReturn<[boolean, string | undefined, boolean]> {
  const probeChannel = channels.probe;
  sub.set_timeout(settings.cfg.redis!.read_timeout * 1000);
  let complete = true;
  while (true) {
    const [reply, err] = sub.read_reply();
    if (reply === undefined) return $multi(false, `redis subscription: no probe back (${err})`, complete);
    const r = reply as RedisReply[];
    if (r[0] === "message" && r[1] === probeChannel) {
      if (r[2] === tostring(token)) return $multi(true, undefined, complete);
    } else if (!onMessage(r)[0]) {
      complete = false;
    }
  }
}

/**
 * The periodic check: heartbeat, the fleet's change counter and a probe in one round
 * trip; then the probe back through the subscription (so it is alive, and every change
 * published before the counter was read has arrived); a reconcile only if one is missing.
 */
function check(sub: Redis): LuaMultiReturn<[boolean, string | undefined]> {
  seen.probe++;
  const [beat, version, beatErr] = heartbeat(true, seen.probe);
  if (!beat) return $multi(false, beatErr);
  const [alive, probeErr, complete] = awaitProbe(sub, seen.probe);
  if (!alive) return $multi(false, probeErr);
  if (!complete || version !== seen.version) {
    ngx.log(ngx.INFO, `intermission: fleet: change counter ${version} but ${seen.version} seen: reconciling`);
    const [ok, recErr] = reconcile();
    if (!ok) return $multi(false, recErr);
  }
  settleUnknown();
  return $multi(true, undefined);
}

/**
 * Changes this node answered "unknown" for: now that Redis answers, settle each (fence it
 * if it has not run) and log what became of it, so the operator learns it; one that was
 * applied (maintenance with no TTL, say) is in force until resumed.
 */
function settleUnknown(): void {
  for (const u of unsettled.all()) {
    const [outcome] = remote.settleOnce(u.id);
    if (outcome === undefined) return; // Redis failing again: the next check tries
    if (outcome === "applied") {
      ngx.log(ngx.WARN, `intermission: fleet: the ${u.action} of scope ${u.scope} answered "unknown" (change ${u.id}) was applied; it stays until changed`);
    } else {
      ngx.log(ngx.NOTICE, `intermission: fleet: the ${u.action} of scope ${u.scope} answered "unknown" (change ${u.id}) was not applied; fenced, it never will be`);
    }
    unsettled.settled(u.scope, [u.id]);
  }
}

/** One subscription, until Redis fails or the worker exits. */
function session(): string {
  const [sub, err] = connect();
  if (sub === undefined) return err!;
  channels.events = key(remote.CHANNEL_SUFFIX);
  channels.probe = key("probe", node.id);
  // The fleet's changes, and this node's probe channel (see check). One SUBSCRIBE, so no
  // message can come before its answer; the second channel's answer is read as a reply.
  const [ok, subErr] = sub.subscribe(channels.events, channels.probe);
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
  zones.state.safe_set(SYNCED_KEY, true);
  zones.state.delete(ERROR_KEY);
  clearPending();
  const [beat, , beatErr] = heartbeat(false);
  if (!beat) {
    sub.close();
    return beatErr!;
  }
  settleUnknown(); // Redis answers again: what became of the changes answered "unknown"
  let stopped = anyStopped();
  let nextCheck = ngx.now() + (stopped ? CHECK_STOPPED : CHECK_IDLE) * jitter();

  while (!ngx.worker.exiting()) {
    // At least once a second, so an exiting worker (a reload) ends its loop soon; a wake
    // costs Redis nothing.
    const wait = math.min(stopped ? WAKE_STOPPED : WAKE_IDLE, nextCheck - ngx.now());
    sub.set_timeout(math.max(1, math.floor(wait * 1000)));
    const [reply, readErr] = sub.read_reply();
    let complete = true;
    let applied: Applied = "none";
    if (reply !== undefined) {
      [complete, applied] = onMessage(reply as RedisReply[]);
    } else if (readErr !== "timeout") {
      sub.close();
      return `redis subscription: ${readErr}`;
    }
    // Everything below waits until this worker's requests that the change lets go have
    // gone: the released waiters were posted, and they run before this thread again.
    if (applied === "resumed") {
      ngx.sleep(0);
      if (seen.shareDue) {
        seen.shareDue = false;
        refreshShare();
      }
    }
    ngx.update_time();
    const now = ngx.now();
    // Whether a scope here is stopped changes by a message or a reconcile (a TTL that runs
    // out is caught at the next check), so a wake that brought nothing does not look; a
    // pause or maintenance just applied needs no look at all.
    if (applied !== "none") {
      const wasStopped = stopped;
      stopped = applied === "stopped" || anyStopped();
      if (stopped && !wasStopped) nextCheck = math.min(nextCheck, now + CHECK_STOPPED * jitter());
    }
    let fine = true;
    let failure: string | undefined;
    if (!complete) [fine, failure] = reconcile();
    if (fine && now >= nextCheck) {
      [fine, failure] = check(sub);
      stopped = anyStopped();
      nextCheck = now + (stopped ? CHECK_STOPPED : CHECK_IDLE) * jitter();
    } else if (fine && reply === undefined && now - seen.beatAt >= WAKE_STOPPED &&
      (seen.version !== seen.beatVersion || (stopped && inflight.total() !== seen.beatInFlight))) {
      // A change applied, or in-flight requests finishing while stopped: a pause's drain
      // elsewhere waits for this node's word (see control's drain). Sent once the channel
      // is quiet (a read timed out), not while a fleet's nodes are all applying the change.
      [fine, , failure] = heartbeat(false);
    }
    if (fine && seen.shareDue && reply === undefined) {
      // Likewise the share of fleet_release_window, once the channel is quiet: by the next
      // resume it counts the nodes as they were at the pause.
      seen.shareDue = false;
      refreshShare();
    }
    if (!fine) {
      sub.close();
      return failure!;
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
    const started = ngx.now();
    const [ok, result] = pcall(session);
    if (ngx.worker.exiting()) break;
    const err = ok ? (result as string) : `sync failed: ${tostring(result)}`;
    zones.state.safe_set(ERROR_KEY, err);
    // A cold start must not wait for Redis forever: fail open after the first attempt.
    clearPending();
    // A session that ran a while has ended: a new outage (log it once) and a quick retry.
    ngx.update_time();
    if (ngx.now() - started > BACKOFF_MAX * 2) {
      backoff = 0.1;
      reported = false;
    }
    if (!reported) {
      ngx.log(ngx.ERR, `intermission: fleet: ${err}; keeping the last known state and retrying`);
      reported = true;
    }
    // Jittered, so a fleet that lost its Redis does not come back in the same millisecond.
    ngx.sleep(backoff * jitter());
    backoff = math.min(backoff * 2, BACKOFF_MAX);
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

/**
 * fleet_release_window: this node's share of the fleet's release window, from the live
 * nodes in the heartbeats (at least 1). Called once the channel is quiet after a pause
 * and right after each resume (whose first grant takes a window of 1 whatever the share),
 * so it costs Redis one script per change, not per second, and the node nothing per
 * node of the fleet; if Redis cannot answer, the last share stays.
 */
export function refreshShare(): void {
  const total = settings.cfg.fleet_release_window;
  if (total === undefined) return;
  const [live] = remote.liveNodes();
  if (live === undefined) return;
  zones.state.safe_set(FLEET_SHARE_KEY, math.max(1, math.floor(total / math.max(1, live))));
}

/** The fleet's nodes as their heartbeats say (two commands: SMEMBERS, MGET). */
export function fleetStatus(): LuaMultiReturn<[{ [k: string]: unknown } | undefined, string | undefined]> {
  const [red, err] = connect();
  if (red === undefined) return $multi(undefined, err);
  const [ids, e1] = red.smembers(key("nodes"));
  if (failed(red, ids)) return $multi(undefined, `redis: ${e1}`);
  const list = ids as string[];
  const nodes: unknown[] = [];
  let held = 0;
  let inFlight = 0;
  if (list.length > 0) {
    const keys: string[] = [];
    for (const id of list) keys.push(key("node", id));
    const [values, e2] = red.mget(...keys);
    if (failed(red, values)) return $multi(undefined, `redis: ${e2}`);
    const gone: string[] = [];
    const replies = values as (string | NgxNull)[];
    for (let i = 0; i < list.length; i++) {
      const v = replies[i];
      if (v === ngx.null) {
        gone.push(list[i]); // it stopped publishing: drop it
        continue;
      }
      const [hb] = cjson.decode(v as string);
      if (type(hb) === "table") {
        const h = hb as { held_total: number; in_flight: number };
        nodes.push(hb);
        held += h.held_total;
        inFlight += h.in_flight;
      }
    }
    if (gone.length > 0) red.srem(key("nodes"), ...gone);
  }
  release(red);
  return $multi({ nodes, node_count: nodes.length, held, in_flight: inFlight }, undefined);
}
