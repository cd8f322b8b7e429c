// LuaJIT's ffi: only what intermission uses.
/** An ngx_shm_zone_t * (cdata). */
declare const enum ShdictZoneBrand {}
type ShdictZone = ShdictZoneBrand & { readonly __shdictZone: unique symbol };
/** An unsigned char * (cdata). */
declare const enum ShdictBufferBrand {}
type ShdictBuffer = ShdictBufferBrand & { readonly __shdictBuffer: unique symbol };

declare module "ffi" {
  interface CType { readonly __ctype: unique symbol }
  /** A cdata of C type `ct` converted from `value`. */
  export function cast(this: void, ct: string | CType, value: unknown): unknown;
  /** A C type, parsed once (ffi.cast with a string parses it on every call). */
  function typeOf(this: void, ct: string): CType;
  /** A new zero-filled cdata of type `ct`; `n` is the element count of a `[?]` array type. */
  function newCdata(this: void, ct: string | CType, n?: number): unknown;
  export { typeOf as typeof, newCdata as new, CType };
  /** C functions already declared by lua-resty-core's ffi.cdef (0.1.25), and libc's kill (liveness.ts's cdef). */
  export const C: {
    /** r->start_sec + r->start_msec / 1000 (what ngx.req.start_time returns). */
    ngx_http_lua_ffi_req_start_time(this: void, r: NgxRequest | undefined): number;
    /** The zone behind a lua_shared_dict's userdata (dict[1]); NULL (== nil) if none. */
    ngx_http_lua_ffi_shdict_udata_to_zone(this: void, udata: unknown): ShdictZone | undefined;
    /**
     * What dict:get() calls: 0 on success, with the value's Lua type number in
     * value_type[0] (0 nil, 1 boolean, 3 number, 4 string), a number in num_value[0], a
     * string or boolean in *str_value_buf (malloc'd anew when longer than str_value_len).
     */
    ngx_http_lua_ffi_shdict_get(this: void, zone: ShdictZone, key: string, key_len: number,
      value_type: { [i: number]: number }, str_value_buf: { [i: number]: ShdictBuffer },
      str_value_len: { [i: number]: number }, num_value: { [i: number]: number },
      user_flags: { [i: number]: number }, get_stale: number, is_stale: { [i: number]: number },
      errmsg: { [i: number]: unknown }): number;
    /** libc's free (declared by resty.core.shdict): for a string get() had to allocate. */
    free(this: void, ptr: unknown): void;
    /** libc kill(2), declared by intermission's liveness.ts (cdef). */
    kill(this: void, pid: number, sig: number): number;
  };
  /** Declares C functions and types. */
  export function cdef(this: void, defs: string): void;
  /** The C errno of the last call. */
  export function errno(this: void): number;
}
