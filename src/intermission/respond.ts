// Responses written by intermission itself: JSON for the control API, and the 503s
// (held request rejected, queue full, maintenance) as a page or JSON by Accept.
import * as cjson from "cjson.safe";

// Empty tables encode as {} (both builds' default). Paths in answers read better
// unescaped; upstream lua-cjson (Debian) lacks that switch.
if (cjson.encode_escape_forward_slash !== undefined) cjson.encode_escape_forward_slash(false);

export function encode(value: unknown): string {
  const [text, err] = cjson.encode(value);
  if (text === undefined) {
    ngx.log(ngx.ERR, `intermission: cannot encode JSON: ${err}`);
    return '{"error":"internal: cannot encode the answer"}';
  }
  return text;
}

/** Sends a JSON body with `status` and ends the request. */
export function json(status: number, body: unknown): never {
  ngx.status = status;
  ngx.header["Content-Type"] = "application/json";
  ngx.header["Cache-Control"] = "no-store";
  ngx.print(encode(body), "\n");
  return ngx.exit(status);
}

export function jsonError(status: number, message: string, field?: string): never {
  return json(status, field === undefined ? { error: message } : { error: message, field });
}

function wantsJson(): boolean {
  const accept = ngx.var.http_accept;
  if (accept === undefined) return false;
  const [found] = string.find(accept, "application/json", 1, true);
  return found !== undefined;
}

const PAGE_TITLE: { [why: string]: string } = {
  maintenance: "Down for maintenance",
  timeout: "Please try again",
  full: "Please try again",
};

/** 503 + Retry-After for a request intermission will not forward. */
export function unavailable(why: "maintenance" | "timeout" | "full", retryAfter: number, reason: string): never {
  ngx.status = 503;
  ngx.header["Retry-After"] = retryAfter;
  ngx.header["Cache-Control"] = "no-store";
  if (wantsJson()) {
    ngx.header["Content-Type"] = "application/json";
    ngx.print(encode({ error: "service unavailable", cause: why, reason, retry_after: retryAfter }), "\n");
  } else {
    ngx.header["Content-Type"] = "text/html; charset=utf-8";
    const title = PAGE_TITLE[why];
    ngx.print(
      `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${title}</title></head>` +
      `<body><h1>${title}</h1><p>We will be back in a moment. Please retry in ${retryAfter} seconds.</p></body></html>\n`,
    );
  }
  return ngx.exit(503);
}
