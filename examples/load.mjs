#!/usr/bin/env node
// A steady load loop for the demo: CONCURRENCY clients send GET requests back to back
// until SIGINT/SIGTERM or DURATION seconds, then print how many succeeded or failed.
// "{id}" in the URL becomes a unique id per request.
//   node examples/load.mjs http://127.0.0.1:8080/ [concurrency=8] [duration=60]
import http from "node:http";

const [url = "http://127.0.0.1:8080/", concurrency = "8", duration = "60"] = process.argv.slice(2);
let running = true;
let ok = 0;
let failed = 0;
let slowest = 0;
const failures = new Map();

const stop = () => (running = false);
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
setTimeout(stop, Number(duration) * 1000).unref();

let sent = 0;
const run = Date.now().toString(36);

function once() {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const req = http.get(url.replace("{id}", `${run}-${sent++}`), { agent: false, timeout: 60_000 }, (res) => {
      res.resume();
      res.on("end", () => {
        slowest = Math.max(slowest, Date.now() - t0);
        if (res.statusCode === 200) ok++;
        else {
          failed++;
          failures.set(`HTTP ${res.statusCode}`, (failures.get(`HTTP ${res.statusCode}`) ?? 0) + 1);
        }
        resolve();
      });
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (e) => {
      failed++;
      failures.set(e.message, (failures.get(e.message) ?? 0) + 1);
      resolve();
    });
  });
}

async function client() {
  while (running) await once();
}

await Promise.all(Array.from({ length: Number(concurrency) }, client));
const detail = [...failures].map(([k, v]) => `${k}: ${v}`).join(", ");
console.log(`load: ${ok} ok, ${failed} failed, slowest ${slowest} ms${detail ? ` (${detail})` : ""}`);
process.exit(failed === 0 ? 0 : 1);
