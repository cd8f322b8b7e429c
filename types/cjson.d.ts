// lua-cjson's "safe" flavour: errors come back as (nil, err) instead of being raised.
// Two builds are in use: OpenResty's fork (2.1.0.x) and upstream 2.1.0 (Debian's
// lua-cjson). Members only the fork has are optional here, so code must check them.
declare module "cjson.safe" {
  interface CjsonSafe {
    /** string | nil, err */
    encode(this: void, value: unknown): LuaMultiReturn<[string | undefined, string | undefined]>;
    /** value | nil, err. JSON null decodes to cjson.null (== ngx.null), not nil. */
    decode(this: void, text: string): LuaMultiReturn<[unknown, string | undefined]>;
    /** The JSON null sentinel: a light userdata equal to ngx.null. */
    readonly null: NgxNull;
    /** A separate instance with its own settings (so changing them does not touch other users of the module). */
    new: (this: void) => CjsonSafe;
    /**
     * Whether decode accepts what JSON calls invalid numbers: hexadecimal ("0x10"),
     * Infinity and NaN. The default is true; false makes them a decode error.
     */
    decode_invalid_numbers(this: void, enabled: boolean): boolean;
    /** OpenResty's fork only: encodes as []. */
    readonly empty_array?: unknown;
    /** OpenResty's fork only: a table with this metatable encodes as [] when empty. */
    readonly empty_array_mt?: LuaMetatable<object>;
    /** OpenResty's fork only: whether an empty table encodes as {} (the default, and upstream's only behaviour) or []. */
    readonly encode_empty_table_as_object?: (this: void, enabled: boolean | "on" | "off") => void;
    /** OpenResty's fork only (2.1.0.5+): whether "/" is escaped as "\/". */
    readonly encode_escape_forward_slash?: (this: void, enabled: boolean) => void;
  }
  const cjson: CjsonSafe;
  export = cjson;
}
