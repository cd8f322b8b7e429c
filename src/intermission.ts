// intermission: hold every incoming request while the database is away, then release
// them in arrival order. The public module: require("intermission").
//
//   init_by_lua_block          { require("intermission").setup({ ... }) }
//   init_worker_by_lua_block   { require("intermission").init_worker() }
//   access_by_lua_block        { require("intermission").access() }
//   header_filter_by_lua_block { require("intermission").header_filter() }   -- optional
//   log_by_lua_block           { require("intermission").log() }
//   content_by_lua_block       { require("intermission").control() }   -- control API
import * as config from "./intermission/config";
import { settings } from "./intermission/settings";
import { bindZones, zones, BUSY_KEY, SEQ_BASE_KEY, upgradeScopes, stateZoneTooSmall } from "./intermission/shm";
import * as gate from "./intermission/gate";
import * as inflight from "./intermission/inflight";
import { bindBusy, allRunning } from "./intermission/busy";
import { fleet, loadFleet } from "./intermission/fleetmode";
import * as record from "./intermission/record";
import { Record } from "./intermission/record";
import { control as controlHandler } from "./intermission/control";
import * as persist from "./intermission/persist";

export const _VERSION = "0.2.0";

/** Validates the options; a bad one stops nginx from starting, with the reason. */
export function setup(options?: unknown): void {
  const [cfg, err] = config.parse(options);
  if (cfg === undefined) error(`intermission.setup: ${err}`, 2);
  const [ok, zoneErr] = bindZones(cfg.dict);
  if (!ok) error(`intermission.setup: ${zoneErr}`, 2);
  const tooSmall = stateZoneTooSmall(cfg.max_scopes, cfg.dict);
  if (tooSmall !== undefined) error(`intermission.setup: ${tooSmall}`, 2);
  if (cfg.store === "redis") {
    const [loaded, loadErr] = loadFleet();
    if (!loaded) error(`intermission.setup: ${loadErr}`, 2);
  }
  settings.cfg = cfg;
  settings.ready = true;
  // Present from the start and never deleted: the hot path reads it as a number.
  const [fresh] = zones.state.safe_add(BUSY_KEY, 0);
  zones.state.safe_add(SEQ_BASE_KEY, 0); // never deleted: reclaim.ts
  upgradeScopes();
  // New zones (a start or a binary upgrade; a reload keeps them): the pauses in force.
  if (fresh) persist.restore();
  stateZone = zones.state;
  bindBusy(zones.state);
  if (cfg.store === "redis") {
    fleet.sync!.node.id = nodeId();
    fleet.sync!.markPending();
  }
}

/** This nginx instance in the fleet's heartbeats: host name and master pid. */
function nodeId(): string {
  let host = "nginx";
  const [f] = io.open("/etc/hostname", "r");
  if (f !== undefined) {
    const line = f.read("*l");
    f.close();
    if (typeof line === "string" && line !== "") host = line;
  }
  return `${host}:${ngx.worker.pid()}`;
}

export function init_worker(): void {
  if (!settings.ready) {
    ngx.log(ngx.ERR, "intermission: setup() was not called in init_by_lua; using the defaults");
    settings.ready = true;
  }
  const [ok, err] = bindZones(settings.cfg.dict);
  if (!ok) {
    ngx.log(ngx.ERR, `intermission: ${err}; requests pass unheld`);
    return;
  }
  zones.state.safe_add(BUSY_KEY, 0);
  upgradeScopes();
  stateZone = zones.state;
  bindBusy(zones.state);
  inflight.init();
  if (settings.cfg.store === "redis" && fleet.sync !== undefined) fleet.sync.start();
}

// The hooks run on every request: what they use is cached in locals. The zone is
// bound by setup() in the master, so every worker forks with it in place.
let stateZone: NgxSharedDict | undefined;
const slow = gate.gate;
const settleRecord = gate.settleRecord;
const responseStarted = gate.responseStarted;
const retryHandler = gate.retry;
const enter = inflight.enter;
const leave = inflight.leave;
const requestKey = record.requestKey;
const requestKeyAndStart = record.requestKeyAndStart;
const recordIfNew = record.recordIfNew;
const forgetForwarded = record.forgetForwarded;
const anyMapped = record.anyMapped;
const lookup = record.lookup;
const forget = record.forget;

/**
 * access_by_lua. Running: one shared-dict read, and the request recorded under its
 * pointer (in an FFI array: no allocation) so that log() undoes exactly this, once.
 */
export function access(): void {
  const zone = stateZone;
  if (zone === undefined) return; // no zones: nothing to hold with (init_worker said why)
  const [r, start] = requestKeyAndStart();
  if (allRunning() && recordIfNew(r, start)) return enter();
  const [ok, err] = pcall(slow);
  if (!ok) ngx.log(ngx.ERR, `intermission: access failed, request passed: ${tostring(err)}`);
}

/** header_filter_by_lua (optional): a released request's window slot comes back as its response starts. */
export function header_filter(): void {
  if (!anyMapped()) return; // only slow-path requests have a lease to give back
  const rec = lookup(requestKey());
  if (rec === undefined || type(rec) === "number") return;
  const [ok, err] = pcall(responseStarted, rec as Record);
  if (!ok) ngx.log(ngx.ERR, `intermission: header_filter failed: ${tostring(err)}`);
}

/** log_by_lua: gives back what access() took (in-flight count, window slot, queue place). */
export function log(): void {
  const r = requestKey();
  if (forgetForwarded(r)) return leave();
  if (!anyMapped()) return; // access() did not run for it (or took nothing)
  const rec = lookup(r);
  if (rec === undefined) return;
  forget(r);
  if (type(rec) === "number") return leave();
  const [ok, err] = pcall(settleRecord, rec as Record);
  if (!ok) ngx.log(ngx.ERR, `intermission: log failed: ${tostring(err)}`);
}

/**
 * content_by_lua of the retry location: `error_page 502 504 = @intermission_retry;` in
 * the protected location sends a released request whose upstream connection failed
 * here, to be held again at the head of the queue and sent once more.
 */
export function retry(): void {
  const [ok, err] = pcall(retryHandler);
  if (!ok) {
    ngx.log(ngx.ERR, `intermission: retry failed: ${tostring(err)}`);
    return ngx.exit(502);
  }
}

/** content_by_lua for the control location. */
export function control(): void {
  controlHandler();
}
