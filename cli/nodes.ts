// Talking to nodes: one control request fanned out to every node at once, each answer
// (or failure) turned into a result with a message a person can act on.
// node:http rather than fetch: fetch refuses the Fetch spec's "bad ports" (6000, 6665,
// ...), and a control location may well listen on one.
import http from "node:http";
import https from "node:https";

export interface NodeResult {
  url: string;
  ok: boolean;
  /** HTTP status, 0 when no answer came. */
  status: number;
  body?: any;
  error?: string;
  /**
   * A change the node could not confirm: false when it is known not to have been applied
   * anywhere (a fleet node's Redis refused or never got it), "unknown" when it may still
   * take effect (the node said so, or gave no answer to the POST in time).
   */
  applied?: false | "unknown";
}

export class Timeout extends Error {}

export function describeFailure(url: string, e: unknown, timeoutS: number): string {
  if (e instanceof Timeout) return `${url}: no answer within ${timeoutS}s`;
  const err = e as { code?: string; message?: string };
  const code = err.code;
  if (code === "ECONNREFUSED") return `${url}: unreachable (connection refused)`;
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") return `${url}: unreachable (unknown host)`;
  if (code === "EHOSTUNREACH" || code === "ENETUNREACH") return `${url}: unreachable (no route to host)`;
  if (code === "ECONNRESET") return `${url}: connection reset`;
  return `${url}: ${err.message ?? String(e)}`;
}

function request(target: string, method: string, headers: Record<string, string>, timeoutS: number): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const lib = target.startsWith("https:") ? https : http;
    const req = lib.request(target, { method, headers }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
      res.on("error", reject);
    });
    req.setTimeout(timeoutS * 1000, () => req.destroy(new Timeout()));
    req.on("error", reject);
    req.end();
  });
}

export async function call(url: string, action: string, method: "GET" | "POST", params: Record<string, string | undefined>,
  token: string | undefined, timeoutS: number): Promise<NodeResult> {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) query.set(k, v);
  const target = `${url}/${action}${query.size > 0 ? `?${query}` : ""}`;
  const headers: Record<string, string> = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    const res = await request(target, method, headers, timeoutS);
    const text = res.text;
    let body: any;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    if (res.status === 401) return { url, ok: false, status: 401, body, error: `${url}: the token was refused (401): check --token or INTERMISSION_TOKEN` };
    if (res.status === 403) return { url, ok: false, status: 403, body, error: `${url}: forbidden (403): the control location does not allow this address` };
    if (res.status < 200 || res.status > 299) {
      const why = body?.error ?? (text.trim().slice(0, 200) || "no reason given");
      const applied = body?.applied === false || body?.applied === "unknown" ? body.applied : undefined;
      return { url, ok: false, status: res.status, body, error: `${url}: ${res.status} ${why}`, applied };
    }
    if (body === undefined) return { url, ok: false, status: res.status, error: `${url}: the answer is not JSON: is this a control location?` };
    return { url, ok: true, status: res.status, body };
  } catch (e) {
    // A change sent that got no answer (timeout, reset) may have been made: say so.
    const uncertain = method === "POST" && (e instanceof Timeout || (e as { code?: string }).code === "ECONNRESET");
    return { url, ok: false, status: 0, error: describeFailure(url, e, timeoutS), applied: uncertain ? "unknown" : undefined };
  }
}

export function fanOut(urls: string[], action: string, method: "GET" | "POST", params: Record<string, string | undefined>,
  token: string | undefined, timeoutS: number): Promise<NodeResult[]> {
  return Promise.all(urls.map((u) => call(u, action, method, params, token, timeoutS)));
}
