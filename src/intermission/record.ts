// What a request did in access(), so that log() undoes exactly that, once.
//
// Records are kept per worker, keyed by the request pointer: lua-resty-core's
// get_request() is the same for the whole request across internal redirects
// (error_page, try_files, ngx.exec), where ngx.ctx starts afresh. A pointer is reused
// once its request is gone, so each record keeps its request's start time, which tells a
// redirected request (same start) from a new one that inherited the key of a request
// whose log() never ran (a location without the log hook).
//
// Two stores. A request the hot path forwarded is the common case and needs only its
// start time: it goes into a fixed FFI array (buckets of 4 slots), which costs no
// allocation, no GC and no rehash. A Lua table keyed by a pointer that
// changes with every request rehashes again and again (measured under callgrind: ~340
// instructions per request at 16 connections). Everything else (a slow-path Record, or a
// forwarded request whose bucket is full) goes into a Lua map that is empty while
// every scope runs, so header_filter() and log() look at it only when `mapped` > 0.
import { get_request } from "resty.core.base";
import { cast, typeof as ctype, new as cnew, C } from "ffi";
import { ScopeKeys } from "./shm";
import { Waiter } from "./waiters";

export type RecordState = "forwarded" | "holding" | "released" | "retrying" | "answered";

export interface Record {
  keys: ScopeKeys;
  /**
   * forwarded/released: counted in flight; holding: in the queue; retrying: sent back by
   * retry() to where it started, not counted anywhere until access() holds it again;
   * answered: by us.
   */
  state: RecordState;
  /** Window lease to give back when the response starts (0: none, or given back). */
  lease: number;
  /** When it was released (ngx.now()): how long its response took to start. */
  released?: number;
  waiter?: Waiter;
  start: number;
  /** When its hold must end ($intermission_max_time or max_hold after it arrived). */
  deadline: number;
  /** Sends again after a failed upstream connection (see gate.retry). */
  tries?: number;
  /** $request_id, read once at its first hold: one id in every log line of the request. */
  requestId?: string;
  /** $uri and $args where access() first held it: a retry must arrive with the same (see replay.ts). */
  uri?: string;
  args?: string;
  /** Whether it was redirected internally (or rewritten) before its first hold. */
  internal?: boolean;
  /** retrying: the address whose connection failed ($upstream_addr), and the status nginx made of it. */
  failedAddr?: string;
  /** The application answered "not applied" (X-Accel-Redirect to the retry location): its port is open, so no connect probe. */
  notApplied?: boolean;
  failStatus?: number;
}

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

// ---- forwarded requests: the FFI array ---------------------------------------------

interface Slot { req: number; start: number }
/** A cdata array: indexed from 0, as in C (not a Lua table). */
interface Slots { [index: number]: Slot }

/**
 * Buckets of WAYS slots, each looked at in straight-line code: a loop here would make
 * LuaJIT abort the hooks' traces ("inner loop in root trace") and run them interpreted.
 * 1024 x 4 x 16 bytes = 64 KB per worker; a full bucket sends a request to the Lua map.
 */
const BUCKETS = 1024;
const WAYS = 4;
const FREE = 0;
const slots = cnew(ctype("struct { double req; double start; }[?]"), BUCKETS * WAYS) as Slots;

/**
 * The request's bucket's first slot. Request structs sit at the start of their 4 KB
 * pools, so their addresses differ in the higher bits: /16 keeps those, and pools
 * 4 KB + 16 apart (257 units, odd) step through every bucket. Bits 4 to 13 of the
 * address, taken with bit operations (LuaJIT's bit library, on the low 32 bits): the
 * same bucket as floor(key / 16) % BUCKETS, without two floating-point floors.
 */
function bucket(key: number): number {
  return ((key >>> 4) & (BUCKETS - 1)) * WAYS;
}

/** The slot holding `key`, or -1. */
function findSlot(key: number): number {
  const b = bucket(key);
  if (slots[b].req === key) return b;
  if (slots[b + 1].req === key) return b + 1;
  if (slots[b + 2].req === key) return b + 2;
  if (slots[b + 3].req === key) return b + 3;
  return -1;
}

/** Puts `key` in a free slot of its bucket; false: the bucket is full. */
function putSlot(key: number, start: number): boolean {
  const b = bucket(key);
  let i = -1;
  if (slots[b].req === FREE) i = b;
  else if (slots[b + 1].req === FREE) i = b + 1;
  else if (slots[b + 2].req === FREE) i = b + 2;
  else if (slots[b + 3].req === FREE) i = b + 3;
  else return false;
  slots[i].req = key;
  slots[i].start = start;
  return true;
}

function forgetSlot(i: number): void {
  slots[i].req = FREE;
}

// ---- everything else: the Lua map ---------------------------------------------------

const live = new LuaMap<number, number | Record>();
/** Entries in `live`; 0 while every scope runs and nothing overflowed. */
let mapped = 0;

function mapSet(key: number, value: number | Record): void {
  if (live.get(key) === undefined) mapped++;
  live.set(key, value);
}

function mapDelete(key: number): void {
  if (live.get(key) !== undefined) {
    live.delete(key);
    mapped--;
  }
}

// ---- the API ------------------------------------------------------------------------

/** Hot path: records a forwarded request unless this request is known. False: known. */
export function recordIfNew(key: number, start: number): boolean {
  if (findSlot(key) >= 0 || (mapped > 0 && live.get(key) !== undefined)) return false;
  if (!putSlot(key, start)) mapSet(key, start);
  return true;
}

/** log() on the hot path: true when the request was a forwarded one, now forgotten. */
export function forgetForwarded(key: number): boolean {
  const i = findSlot(key);
  if (i < 0) return false;
  forgetSlot(i);
  return true;
}

/** Whether any request has a Record (or an overflowed start) in the map. */
export function anyMapped(): boolean {
  return mapped > 0;
}

/** What access() recorded: a forwarded request's start time, a Record, or nothing. */
export function lookup(key: number): number | Record | undefined {
  const i = findSlot(key);
  if (i >= 0) return slots[i].start;
  return mapped > 0 ? live.get(key) : undefined;
}

/** A request forwarded by the slow path. */
export function rememberForwarded(key: number, start: number): void {
  if (!putSlot(key, start)) mapSet(key, start);
}

export function remember(key: number, rec: Record): void {
  const i = findSlot(key);
  if (i >= 0) forgetSlot(i);
  mapSet(key, rec);
}

export function forget(key: number): void {
  const i = findSlot(key);
  if (i >= 0) forgetSlot(i);
  else mapDelete(key);
}
