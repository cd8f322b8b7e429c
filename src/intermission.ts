// intermission: hold every incoming request while the database is away, then release
// them in arrival order. The public module: require("intermission").
//
//   init_by_lua_block        { require("intermission").setup({ ... }) }
//   init_worker_by_lua_block { require("intermission").init_worker() }
//   access_by_lua_block      { require("intermission").access() }
//   log_by_lua_block         { require("intermission").log() }
//   content_by_lua_block     { require("intermission").control() }   -- control API
import * as config from "./intermission/config";
import { settings } from "./intermission/settings";
import { bindZones, zones, BUSY_KEY } from "./intermission/shm";
import * as gate from "./intermission/gate";
import * as inflight from "./intermission/inflight";
import * as fleet from "./intermission/fleet/sync";
import { control as controlHandler } from "./intermission/control";

export const _VERSION = "0.1.0";

/** Validates the options; a bad one stops nginx from starting, with the reason. */
export function setup(options?: unknown): void {
  const [cfg, err] = config.parse(options);
  if (cfg === undefined) error(`intermission.setup: ${err}`, 2);
  const [ok, zoneErr] = bindZones(cfg.dict);
  if (!ok) error(`intermission.setup: ${zoneErr}`, 2);
  settings.cfg = cfg;
  settings.ready = true;
  stateZone = zones.state;
  if (cfg.store === "redis") {
    fleet.node.id = nodeId();
    fleet.markPending();
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
  if (!ok) ngx.log(ngx.ERR, `intermission: ${err}`);
  stateZone = zones.state;
  if (settings.cfg.store === "redis") fleet.start();
}

// The hooks run on every request: what they use is cached in locals. The zone is
// bound by setup() in the master, so every worker forks with it in place.
let stateZone: NgxSharedDict | undefined;
const slow = gate.gate;
const recordsPending = gate.recordsPending;
const settleRecord = gate.settleRecord;
const enter = inflight.enter;
const leave = inflight.leave;

/** access_by_lua: while every scope runs, one shared-dict read and a local count. */
export function access(): void {
  // BUSY_KEY is absent while every scope runs (deleted when the count reaches 0).
  if (stateZone!.get(BUSY_KEY)[0] === undefined) return enter();
  const [ok, err] = pcall(slow);
  if (!ok) ngx.log(ngx.ERR, `intermission: access failed, request passed: ${tostring(err)}`);
}

/** log_by_lua: gives back the request's in-flight count and release-window slot. */
export function log(): void {
  if (!recordsPending()) return leave();
  const [ok, err] = pcall(settleRecord);
  if (!ok) ngx.log(ngx.ERR, `intermission: log failed: ${tostring(err)}`);
}

/** content_by_lua for the control location. */
export function control(): void {
  controlHandler();
}
