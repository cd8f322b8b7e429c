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
import { bindZones } from "./intermission/shm";
import * as gate from "./intermission/gate";
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
}

export function init_worker(): void {
  if (!settings.ready) {
    ngx.log(ngx.ERR, "intermission: setup() was not called in init_by_lua; using the defaults");
    settings.ready = true;
  }
  const [ok, err] = bindZones(settings.cfg.dict);
  if (!ok) ngx.log(ngx.ERR, `intermission: ${err}`);
}

const busy = gate.busy;
const pass = gate.pass;
const slow = gate.gate;

/** access_by_lua: costs one shared-dict read (and the in-flight count) while running. */
export function access(): void {
  if (!busy()) return pass();
  const [ok, err] = pcall(slow);
  if (!ok) ngx.log(ngx.ERR, `intermission: access failed, request passed: ${tostring(err)}`);
}

const done = gate.done;

/** log_by_lua: gives back the request's in-flight count and release-window slot. */
export function log(): void {
  const [ok, err] = pcall(done);
  if (!ok) ngx.log(ngx.ERR, `intermission: log failed: ${tostring(err)}`);
}

/** content_by_lua for the control location. */
export function control(): void {
  controlHandler();
}
