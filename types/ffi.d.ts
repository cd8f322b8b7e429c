// LuaJIT's ffi: only what intermission uses.
declare module "ffi" {
  /** A cdata of C type `ct` converted from `value`. */
  export function cast(this: void, ct: string, value: unknown): unknown;
}
