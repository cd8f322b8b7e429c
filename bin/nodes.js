// Talking to nodes: one control request fanned out to every node at once, each answer
// (or failure) turned into a result with a message a person can act on.
// node:http rather than fetch: fetch refuses the Fetch spec's "bad ports" (6000, 6665,
// ...), and a control location may well listen on one.
import http from "node:http";
import https from "node:https";
export class Timeout extends Error {
}
export function describeFailure(url, e, timeoutS) {
    if (e instanceof Timeout)
        return `${url}: no answer within ${timeoutS}s`;
    const err = e;
    const code = err.code;
    if (code === "ECONNREFUSED")
        return `${url}: unreachable (connection refused)`;
    if (code === "ENOTFOUND" || code === "EAI_AGAIN")
        return `${url}: unreachable (unknown host)`;
    if (code === "EHOSTUNREACH" || code === "ENETUNREACH")
        return `${url}: unreachable (no route to host)`;
    if (code === "ECONNRESET")
        return `${url}: connection reset`;
    return `${url}: ${err.message ?? String(e)}`;
}
function request(target, method, headers, timeoutS) {
    return new Promise((resolve, reject) => {
        const lib = target.startsWith("https:") ? https : http;
        const req = lib.request(target, { method, headers }, (res) => {
            let text = "";
            res.setEncoding("utf8");
            res.on("data", (c) => (text += c));
            res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
            res.on("error", reject);
        });
        req.setTimeout(timeoutS * 1000, () => req.destroy(new Timeout()));
        req.on("error", reject);
        req.end();
    });
}
export async function call(url, action, method, params, token, timeoutS) {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params))
        if (v !== undefined)
            query.set(k, v);
    const target = `${url}/${action}${query.size > 0 ? `?${query}` : ""}`;
    const headers = { Accept: "application/json" };
    if (token)
        headers.Authorization = `Bearer ${token}`;
    try {
        const res = await request(target, method, headers, timeoutS);
        const text = res.text;
        let body;
        try {
            body = JSON.parse(text);
        }
        catch {
            body = undefined;
        }
        if (res.status === 401)
            return { url, ok: false, status: 401, body, error: `${url}: the token was refused (401): check --token or INTERMISSION_TOKEN` };
        if (res.status === 403)
            return { url, ok: false, status: 403, body, error: `${url}: forbidden (403): the control location does not allow this address` };
        if (res.status < 200 || res.status > 299) {
            const why = body?.error ?? (text.trim().slice(0, 200) || "no reason given");
            const applied = body?.applied === false || body?.applied === "unknown" ? body.applied : undefined;
            return { url, ok: false, status: res.status, body, error: `${url}: ${res.status} ${why}`, applied };
        }
        if (body === undefined)
            return { url, ok: false, status: res.status, error: `${url}: the answer is not JSON: is this a control location?` };
        return { url, ok: true, status: res.status, body };
    }
    catch (e) {
        // A change sent that got no answer (timeout, reset) may have been made: say so.
        const uncertain = method === "POST" && (e instanceof Timeout || e.code === "ECONNRESET");
        return { url, ok: false, status: 0, error: describeFailure(url, e, timeoutS), applied: uncertain ? "unknown" : undefined };
    }
}
export function fanOut(urls, action, method, params, token, timeoutS) {
    return Promise.all(urls.map((u) => call(u, action, method, params, token, timeoutS)));
}
