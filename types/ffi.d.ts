// LuaJIT's ffi: only what intermission uses.
declare module "ffi" {
  interface CType { readonly __ctype: unique symbol }
  /** A cdata of C type `ct` converted from `value`. */
  export function cast(this: void, ct: string | CType, value: unknown): unknown;
  /** A C type, parsed once (ffi.cast with a string parses it on every call). */
  function typeOf(this: void, ct: string): CType;
  /** A new zero-filled cdata of type `ct`; `n` is the element count of a `[?]` array type. */
  function newCdata(this: void, ct: string | CType, n?: number): unknown;
  export { typeOf as typeof, newCdata as new, CType };
  /** C functions already declared by lua-resty-core's ffi.cdef (0.1.25). */
  export const C: {
    /** r->start_sec + r->start_msec / 1000 (what ngx.req.start_time returns). */
    ngx_http_lua_ffi_req_start_time(this: void, r: NgxRequest | undefined): number;
    /** libc kill(2), declared by intermission's liveness.ts (cdef). */
    kill(this: void, pid: number, sig: number): number;
  };
  /** Declares C functions and types. */
  export function cdef(this: void, defs: string): void;
  /** The C errno of the last call. */
  export function errno(this: void): number;
}
