// A small HTTP client for the tests: one fresh connection per request (held requests
// must not share sockets), abortable, and timed.
import http from "node:http";

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** Milliseconds from sending to the end of the body. */
  ms: number;
  json<T = any>(): T;
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  timeoutMs?: number;
}

export interface PendingRequest {
  reply: Promise<Reply>;
  /** Closes the connection as a browser would when its user gives up. */
  abort(): void;
}

export function send(url: string, opts: RequestOptions = {}): PendingRequest {
  const started = performance.now();
  let req!: http.ClientRequest;
  const reply = new Promise<Reply>((resolve, reject) => {
    req = http.request(url, { method: opts.method ?? "GET", headers: opts.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => {
        const body = Buffer.concat(chunks).toString("utf8");
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body,
          ms: performance.now() - started,
          json: () => JSON.parse(body),
        });
      });
    });
    req.on("error", reject);
    req.setTimeout(opts.timeoutMs ?? 60_000, () => req.destroy(new Error(`timeout after ${opts.timeoutMs ?? 60_000} ms: ${url}`)));
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
  return { reply, abort: () => req.destroy() };
}

export function get(url: string, opts: RequestOptions = {}): Promise<Reply> {
  return send(url, opts).reply;
}

export function post(url: string, body?: string, headers: Record<string, string> = {}): Promise<Reply> {
  return send(url, {
    method: "POST",
    body,
    headers: body !== undefined && !headers["Content-Type"]
      ? { "Content-Type": "application/x-www-form-urlencoded", ...headers }
      : headers,
  }).reply;
}

/** Polls `check` until it returns a truthy value (a condition, not a timed sleep). */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
}
