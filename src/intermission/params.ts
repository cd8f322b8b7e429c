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
export const MIN_TTL = 0.001;
export const MAX_DRAIN = 600;
export const MAX_REASON = 500;
const MAX_BODY = 16384;

export interface ParamError {
  message: string;
  field?: string;
}

/**
 * Plain decimal seconds: "30", "2.5". No sign, hex, exponent or whitespace. A JSON number
 * is held to the same: -0 is refused as "-0" is in a query.
 */
function parseSeconds(field: string, raw: unknown, max: number): LuaMultiReturn<[number | undefined, ParamError | undefined]> {
  let n: number | undefined;
  if (type(raw) === "number") {
    n = raw as number;
    if (n === 0 && 1 / n < 0) n = undefined;
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

/** cjson with hexadecimal numbers, Infinity and NaN refused (its default accepts them), made once per worker. */
const json: { strict?: typeof cjson } = {};

function strictJson(): typeof cjson {
  if (json.strict === undefined) {
    json.strict = cjson.new();
    json.strict.decode_invalid_numbers(false);
  }
  return json.strict;
}

/**
 * The first member name that a JSON object's top level repeats, if any (cjson keeps the
 * last silently). `text` is known to decode to an object; names are compared decoded,
 * so "ttl" and "t\u0074l" are the same name.
 */
function repeatedKey(text: string): string | undefined {
  const names: { [name: string]: true } = {};
  const n = text.length;
  let depth = 0;
  let expectName = false;
  let i = 1;
  while (i <= n) {
    const c = string.sub(text, i, i);
    if (c === '"') {
      let j = i + 1;
      while (j <= n) {
        const d = string.sub(text, j, j);
        if (d === "\\") j += 2;
        else if (d === '"') break;
        else j++;
      }
      if (depth === 1 && expectName) {
        const [name] = strictJson().decode(string.sub(text, i, j));
        if (type(name) === "string") {
          if (names[name as string] !== undefined) return name as string;
          names[name as string] = true;
        }
        expectName = false;
      }
      i = j + 1;
      continue;
    }
    if (c === "{" || c === "[") {
      depth++;
      if (depth === 1) expectName = c === "{";
    } else if (c === "}" || c === "]") {
      depth--;
    } else if (c === "," && depth === 1) {
      expectName = true;
    }
    i++;
  }
  return undefined;
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
    const [decoded, err] = strictJson().decode(body);
    if (decoded === undefined || type(decoded) !== "table") {
      return $multi(undefined, { field: "body", message: `malformed JSON body${err !== undefined ? ": " + err : ""}` });
    }
    // A JSON array decodes to a table too; only an object has string keys.
    for (const [k] of pairs(decoded as object)) {
      if (type(k) !== "string") return $multi(undefined, { field: "body", message: "the JSON body must be an object" });
    }
    const repeated = repeatedKey(body);
    if (repeated !== undefined) {
      return $multi(undefined, { field: repeated, message: `${repeated} is given more than once` });
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
    // A deadline finer than a millisecond cannot be kept (Redis expiries are in ms).
    if (ttl! > 0 && ttl! < MIN_TTL) {
      return $multi(undefined, { field: "ttl", message: `ttl must be 0 (no expiry) or from ${MIN_TTL} to ${MAX_TTL} seconds` });
    }
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
