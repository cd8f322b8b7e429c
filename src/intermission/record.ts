// What a request did in access(), so that log() undoes exactly that, once.
//
// Records are kept per worker, keyed by the request pointer: lua-resty-core's
// get_request() is the same for the whole request across internal redirects
// (error_page, try_files, ngx.exec), where ngx.ctx starts afresh. A request the hot path
// forwarded is recorded as its start time (a number: no table, no allocation); one that
// took the slow path as a Record. A pointer is reused once its request is gone, so the
// start time tells a redirected request (same start) from a new one that inherited the
// key of a request whose log() never ran (a location without the log hook).
import { get_request } from "resty.core.base";
import { cast, typeof as ctype, C } from "ffi";
import { ScopeKeys } from "./shm";
import { Waiter } from "./waiters";

export type RecordState = "forwarded" | "holding" | "released" | "answered";

export interface Record {
  keys: ScopeKeys;
  /** forwarded/released: counted in flight; holding: in the queue; answered: by us. */
  state: RecordState;
  /** Window lease to give back when the response starts (0: none, or given back). */
  lease: number;
  waiter?: Waiter;
  start: number;
  /** When its hold must end ($intermission_max_time or max_hold after it arrived). */
  deadline: number;
}

export const live = new LuaMap<number, number | Record>();

const uintptr = ctype("uintptr_t");

/** The request pointer as a number (user-space addresses fit a double exactly). */
export function requestKey(): number {
  return tonumber(cast(uintptr, get_request()))!;
}

/** The same, with the request's start time (the stale-record check), for the hot path. */
export function requestKeyAndStart(): LuaMultiReturn<[number, number]> {
  const r = get_request();
  // lua-resty-core declared this C function (ngx.req.start_time uses it): one FFI call
  // on the pointer we already have, instead of a second get_request().
  return $multi(tonumber(cast(uintptr, r))!, C.ngx_http_lua_ffi_req_start_time(r));
}
export const startTime = ngx.req.start_time;
