// Control API input: query string, form body or JSON body, validated field by field.
// Anything not understood is a 400 that names the field; nothing is changed then.
import * as cjson from "cjson.safe";

export interface ControlParams {
  ttl?: number;
  reason?: string;
  scope?: string;
  drain?: number;
}

const KNOWN: { [name: string]: true } = { ttl: true, reason: true, scope: true, drain: true };
export const MAX_TTL = 7 * 86400;
export const MAX_DRAIN = 600;
export const MAX_REASON = 500;
const MAX_BODY = 16384;

export interface ParamError {
  message: string;
  field?: string;
}

/** Plain decimal seconds: "30", "2.5". No sign, hex, exponent or whitespace. */
function parseSeconds(field: string, raw: unknown, max: number): LuaMultiReturn<[number | undefined, ParamError | undefined]> {
  let n: number | undefined;
  if (type(raw) === "number") {
    n = raw as number;
  } else if (type(raw) === "string" && string.match(raw as string, "^%d+%.?%d*$")[0] !== undefined && (raw as string).length <= 12) {
    n = tonumber(raw as string);
  }
  if (n === undefined || n !== n || n < 0 || n > max) {
    return $multi(undefined, { field, message: `${field} must be a number of seconds from 0 to ${max}` });
  }
  return $multi(n, undefined);
}

/** Scope names: 1-64 of letters, digits, "." "_" ":" "-". */
export function validScope(scope: unknown): boolean {
  return type(scope) === "string" && (scope as string).length <= 64 &&
    string.match(scope as string, "^[%w%._:%-]+$")[0] !== undefined;
}

function readBody(): LuaMultiReturn<[{ [k: string]: unknown } | undefined, ParamError | undefined]> {
  const method = ngx.req.get_method();
  if (method !== "POST" && method !== "PUT") return $multi({}, undefined);
  ngx.req.read_body();
  const body = ngx.req.get_body_data();
  if (body === undefined) {
    if (ngx.req.get_body_file() !== undefined) return $multi(undefined, { message: "request body too large" });
    return $multi({}, undefined);
  }
  if (body.length > MAX_BODY) return $multi(undefined, { message: "request body too large" });
  const contentType = ngx.var.content_type ?? "";
  if (string.find(contentType, "application/json", 1, true)[0] !== undefined) {
    const [decoded, err] = cjson.decode(body);
    if (decoded === undefined || type(decoded) !== "table") {
      return $multi(undefined, { field: "body", message: `malformed JSON body${err !== undefined ? ": " + err : ""}` });
    }
    // A JSON array decodes to a table too; only an object has string keys.
    for (const [k] of pairs(decoded as object)) {
      if (type(k) !== "string") return $multi(undefined, { field: "body", message: "the JSON body must be an object" });
    }
    return $multi(decoded as { [k: string]: unknown }, undefined);
  }
  const [args, err] = ngx.req.get_post_args(32);
  if (args === undefined) return $multi(undefined, { field: "body", message: `malformed form body: ${err}` });
  if (err === "truncated") return $multi(undefined, { message: "too many parameters" });
  return $multi(args as { [k: string]: unknown }, undefined);
}

export function parse(): LuaMultiReturn<[ControlParams | undefined, ParamError | undefined]> {
  const [query, queryErr] = ngx.req.get_uri_args(32);
  if (queryErr === "truncated") return $multi(undefined, { message: "too many parameters" });
  const [body, bodyErr] = readBody();
  if (body === undefined) return $multi(undefined, bodyErr);

  const merged: { [k: string]: unknown } = {};
  for (const source of [query as { [k: string]: unknown }, body]) {
    for (const [k, v] of pairs(source)) {
      const name = k as string;
      if (KNOWN[name] === undefined) return $multi(undefined, { field: name, message: `unknown parameter "${name}"` });
      if (merged[name] !== undefined || type(v) === "table") {
        return $multi(undefined, { field: name, message: `${name} is given more than once` });
      }
      if (v === true || v === cjson.null) return $multi(undefined, { field: name, message: `${name} needs a value` });
      merged[name] = v;
    }
  }

  const out: ControlParams = {};
  if (merged.ttl !== undefined) {
    const [ttl, err] = parseSeconds("ttl", merged.ttl, MAX_TTL);
    if (err !== undefined) return $multi(undefined, err);
    out.ttl = ttl;
  }
  if (merged.drain !== undefined) {
    const [drain, err] = parseSeconds("drain", merged.drain, MAX_DRAIN);
    if (err !== undefined) return $multi(undefined, err);
    out.drain = drain;
  }
  if (merged.reason !== undefined) {
    if (type(merged.reason) !== "string" || (merged.reason as string).length > MAX_REASON) {
      return $multi(undefined, { field: "reason", message: `reason must be text of at most ${MAX_REASON} bytes` });
    }
    out.reason = merged.reason as string;
  }
  if (merged.scope !== undefined) {
    if (!validScope(merged.scope)) {
      return $multi(undefined, { field: "scope", message: "scope must be 1-64 letters, digits, '.', '_', ':' or '-'" });
    }
    out.scope = merged.scope as string;
  }
  return $multi(out, undefined);
}
