// The hot path's one shared-dict read: is every scope running (BUSY_KEY = 0)?
//
// lua-resty-core's dict:get() checks its arguments, converts the zone's userdata to the
// zone's pointer (a C call) and fills a fresh string buffer on every call. Here the zone
// pointer is converted once, when the zone is bound, and the read is the same C function
// that get() calls, ngx_http_lua_ffi_shdict_get, with buffers kept for the worker's
// life: same lock, same lookup, same expiry of stale keys. The function is the one
// lua-resty-core 0.1.25 declares (ffi.cdef) and calls for every get(), so it is declared
// wherever get() works; if it or the userdata-to-zone conversion is missing, the read
// falls back to dict:get().
//
// Anything but the number 0 (a count, a string, an error) answers false: the caller
// takes the slow path, which reads the key again through the ordinary API.
import { new as cnew, C } from "ffi";
import { BUSY_KEY } from "./shm";

interface Cells<T> { [index: number]: T }

/** ngx_http_lua_ffi_shdict_get's value types (Lua's type numbers). */
const LUA_TNUMBER = 3;
const LUA_TSTRING = 4;
const VALUE_BUF_SIZE = 8;

const valueType = cnew("int[1]") as Cells<number>;
const valueBuf = cnew("unsigned char[?]", VALUE_BUF_SIZE) as ShdictBuffer;
const strValue = cnew("unsigned char *[1]") as Cells<ShdictBuffer>;
const strLength = cnew("size_t[1]") as Cells<number>;
const numValue = cnew("double[1]") as Cells<number>;
const userFlags = cnew("int[1]") as Cells<number>;
const isStale = cnew("int[1]") as Cells<number>;
const errmsg = cnew("char *[1]") as Cells<unknown>;
const BUSY_KEY_LENGTH = BUSY_KEY.length;

let dict: NgxSharedDict | undefined;
let zonePtr: ShdictZone | undefined;

/** Binds the state zone (setup(), init_worker()); the direct read when it is available. */
export function bindBusy(zone: NgxSharedDict): void {
  dict = zone;
  zonePtr = undefined;
  const [ok, ptr] = pcall(() => C.ngx_http_lua_ffi_shdict_udata_to_zone(rawget(zone as unknown as { [k: number]: unknown }, 1)));
  const [hasGet] = pcall(() => C.ngx_http_lua_ffi_shdict_get);
  // A NULL pointer compares equal to nil: no zone, no direct read.
  if (ok && hasGet && ptr !== undefined) zonePtr = ptr;
}

/** True when the busy count reads as the number 0: every scope runs. */
export function allRunning(): boolean {
  const zone = zonePtr;
  if (zone === undefined) return dict!.get(BUSY_KEY)[0] === 0;
  strValue[0] = valueBuf;
  strLength[0] = VALUE_BUF_SIZE;
  if (C.ngx_http_lua_ffi_shdict_get(zone, BUSY_KEY, BUSY_KEY_LENGTH, valueType, strValue, strLength,
    numValue, userFlags, 0, isStale, errmsg) !== 0) return false;
  const t = valueType[0];
  if (t === LUA_TNUMBER) return numValue[0] === 0;
  // A string longer than our buffer was copied into memory the C function allocated.
  if (t === LUA_TSTRING && strValue[0] !== valueBuf) C.free(strValue[0]);
  return false;
}
