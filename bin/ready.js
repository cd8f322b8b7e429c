// run --ready: after CMD, poll the application's readiness URL until it answers 2xx, so
// that the held requests are released into a backend that serves them, not into one
// that is still starting (each of those would be a 502 the application never saw).
import http from "node:http";
import https from "node:https";
import { setTimeout as sleep } from "node:timers/promises";
import { describeFailure, Timeout } from "./nodes.js";
/** Seconds between the end of one attempt and the start of the next. */
export const READY_INTERVAL = 0.2;
/** Seconds one attempt may take: a readiness check slower than that counts as not ready. */
export const READY_ATTEMPT_TIMEOUT = 2;
/**
 * One GET, on a fresh connection (agent: false): a kept-alive socket could belong to the
 * process that CMD just replaced. Resolves with the HTTP status; the body is discarded.
 * No token is sent: the URL is the application's, not a control location.
 */
function probe(url, timeoutS, signal) {
    return new Promise((resolve, reject) => {
        const lib = url.startsWith("https:") ? https : http;
        const req = lib.request(url, { method: "GET", agent: false, signal }, (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
        });
        req.setTimeout(timeoutS * 1000, () => req.destroy(new Timeout()));
        req.on("error", reject);
        req.end();
    });
}
/**
 * Polls `url` until it answers 2xx, `timeoutS` passes, or `signal` aborts. Connection
 * refused, a timeout and any non-2xx answer all mean "not ready yet"; each change in the
 * reason is logged once, so a long wait says what it is waiting for without flooding.
 */
export async function waitUntilReady(url, timeoutS, signal, log) {
    const started = performance.now();
    const deadline = started + timeoutS * 1000;
    const waited = () => (performance.now() - started) / 1000;
    let attempts = 0;
    let last = "no answer yet";
    const end = (ready) => ({ ready, interrupted: signal.aborted, waitedS: waited(), attempts, last });
    while (!signal.aborted) {
        attempts++;
        // An attempt near the deadline gets what is left, in tenths (it is printed), and at
        // least 0.1 s rather than no time at all.
        const left = (deadline - performance.now()) / 1000;
        const attemptTimeout = Math.max(0.1, Math.round(Math.min(READY_ATTEMPT_TIMEOUT, left) * 10) / 10);
        let reason;
        try {
            const status = await probe(url, attemptTimeout, signal);
            reason = `answered ${status}`;
            if (status >= 200 && status <= 299) {
                last = reason;
                return end(true);
            }
        }
        catch (e) {
            if (signal.aborted)
                break;
            reason = describeFailure(url, e, attemptTimeout).slice(url.length + 2);
        }
        if (reason !== last)
            log(`not ready yet: ${url}: ${reason}`);
        last = reason;
        const remainingMs = deadline - performance.now();
        if (remainingMs <= 0)
            break;
        await sleep(Math.min(READY_INTERVAL * 1000, remainingMs), undefined, { signal }).catch(() => undefined);
    }
    return end(false);
}
