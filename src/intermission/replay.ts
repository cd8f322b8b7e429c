// Whether a request whose upstream connection failed can be sent again exactly as it was
// first sent, and how: the retry lane (gate.retry) replays the request from its start.
//
// The retry location is reached by error_page, so the request has left the location it
// failed in, and nginx has already decoded and maybe rewritten $uri. An internal
// redirect to $uri would look the location up again from the rewritten URI (a prefix-
// stripping `rewrite ... break` lands in another location) and would send the decoded
// URI escaped again (%2F arrives as /, %3F as a query string). So the request is sent
// back to where it started instead: ngx.exec of the client's own path, which nginx 1.22
// unescapes once (ngx_http_parse_unsafe_uri: %XX decoded, a decoded "?" kept in the
// path), and its own query string; the server's and the location's rewrites run again
// as they ran the first time, and access() checks that the request arrives as it was
// first held ($uri and $args equal) before it holds it in the retry lane.
//
// What cannot be made equal is refused, and the request gets the 502 as nginx made it:
// - A request redirected internally has lost r->valid_unparsed_uri, so proxy_pass
//   without a URI part sends $uri escaped again instead of the client's bytes. The first
//   try sent the client's bytes too unless a rewrite or internal redirect changed the URI
//   before it; when nothing visibly did, the replay is sent only if escaping $uri gives
//   back the client's bytes exactly (no %2F, %2B, lower-case or needless escapes).
// - A path nginx normalised ("//", "/./", "/../") or that holds a NUL or "#" would start
//   the replay from another URI than nginx parsed the first time.
// - A body nginx does not hold whole (proxy_request_buffering off: it was streamed to
//   the failed connection) cannot be sent again.
const ngxVar = ngx.var;

/** Bytes every nginx escapes in a URI it sends upstream (NGX_ESCAPE_URI). */
const ESCAPED = `[%z${string.char(1)}-${string.char(32)}#%%?${string.char(127)}-${string.char(255)}]`;
/**
 * Printable bytes whose escaping differs between nginx versions (1.22 escapes all of
 * these; others less): a URI holding one is not predictable, so not replayed unless a
 * rewrite made the first try escaped as well.
 */
const UNSURE = "[\"<>\\^`{|}%[%]]";

/** $uri as proxy_pass escapes it after an internal redirect; undefined: not predictable. */
export function escapeUri(uri: string): string | undefined {
  if (string.find(uri, UNSURE)[0] !== undefined) return undefined;
  return string.gsub(uri, ESCAPED, (c: string) => string.format("%%%02X", string.byte(c)))[0];
}

/** %XX decoded once, as ngx.exec does. */
export function unescapeOnce(path: string): string {
  return string.gsub(path, "%%(%x%x)", (hex: string) => string.char(tonumber(hex, 16)!))[0];
}

/** A decoded path that nginx's own parser would have normalised, or that ngx.exec refuses. */
function notReplayablePath(path: string): string | undefined {
  if (string.find(path, "[%z#]")[0] !== undefined) return "its path holds a NUL or #";
  if (string.find(path, "//", 1, true)[0] !== undefined) return "its path holds //";
  if (string.find(path, "/%.%.?/")[0] !== undefined || string.find(path, "/%.%.?$")[0] !== undefined) return "its path holds a dot segment";
  return undefined;
}

/**
 * The request body, when it has one, is held whole by nginx (in memory or in its temp
 * file), so proxy_pass can send it again: undefined, or why not.
 */
export function bodyNotReplayable(): string | undefined {
  const chunked = ngxVar.http_transfer_encoding !== undefined;
  // For a body read whole, nginx sets the length, a chunked one's too.
  const length = tonumber(ngxVar.content_length ?? "");
  if (length === undefined) return chunked ? "its chunked body was streamed (proxy_request_buffering off)" : undefined;
  if (length === 0) return undefined;
  const data = ngx.req.get_body_data();
  if (data !== undefined) return data.length === length ? undefined : `only ${data.length} of its ${length} body bytes are held (proxy_request_buffering off)`;
  // nginx writes a temp file only for a body it buffers whole before proxy_pass starts,
  // never with proxy_request_buffering off. (Its name cannot be opened to measure it:
  // nginx unlinks the file as soon as it creates it.)
  if (ngx.req.get_body_file() !== undefined) return undefined;
  return `its ${length}-byte body was streamed (proxy_request_buffering off)`;
}

/**
 * Where to send a failed request again so that it is the same request: the client's own
 * path and query string (for ngx.exec), or why it cannot be; and whether `uri` and `args`
 * ($uri and $args where access() first held it) are the client's own, undecoded aside.
 */
export function target(uri: string, args: string): LuaMultiReturn<[string | undefined, string | undefined, string | undefined, boolean]> {
  const raw = ngxVar.request_uri ?? "";
  if (string.sub(raw, 1, 1) !== "/") return $multi(undefined, undefined, "its request URI is not a path", false);
  const [q] = string.find(raw, "?", 1, true);
  const rawPath = q === undefined ? raw : string.sub(raw, 1, q - 1);
  const rawArgs = q === undefined ? "" : string.sub(raw, q + 1);
  const path = unescapeOnce(rawPath);
  const bad = notReplayablePath(path);
  if (bad !== undefined) return $multi(undefined, undefined, bad, false);
  // A rewrite or internal redirect before access() changed $uri or $args (nginx's parser
  // gives back `path` for a path notReplayablePath accepts): the first try was sent with
  // the URI escaped from $uri already, as the replay will be. Otherwise it may have gone
  // with the client's bytes, so those must be what escaping $uri gives.
  const asSent = uri === path && args === rawArgs;
  if (asSent) {
    const escaped = escapeUri(uri);
    if (escaped === undefined || (args === "" ? escaped : `${escaped}?${args}`) !== raw) {
      return $multi(undefined, undefined, "proxy_pass could not send its URI's bytes again as the client sent them", asSent);
    }
  }
  const bodyWhy = bodyNotReplayable();
  if (bodyWhy !== undefined) return $multi(undefined, undefined, bodyWhy, asSent);
  return $multi(rawPath, rawArgs === "" ? undefined : rawArgs, undefined, asSent);
}
