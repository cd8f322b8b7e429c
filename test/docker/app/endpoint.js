// The floating endpoint: a TCP proxy standing in for a VIP or a DNS name. New
// connections go to the current target; existing ones stay where they are, as with a
// DNS change. A move is a POST to the control port (loopback inside the container):
//   node endpoint.js HOST:PORT          (listens on :5432, control on 127.0.0.1:5480)
//   move-endpoint HOST:PORT
"use strict";
const net = require("node:net");
const http = require("node:http");

let target = parseTarget(process.argv[2] ?? process.env.ENDPOINT_TARGET ?? "primary:5432");

function parseTarget(s) {
  const m = /^([A-Za-z0-9.-]+):(\d+)$/.exec(s);
  if (!m) throw new Error(`endpoint: bad target ${s} (HOST:PORT)`);
  return { host: m[1], port: Number(m[2]) };
}

net.createServer((client) => {
  const upstream = net.connect(target);
  client.pipe(upstream).pipe(client);
  // A side that fails ends both at once, as a lost peer would. A side that closes cleanly
  // is closed on the other side too, but only after what it sent last is delivered, as a
  // VIP would: PostgreSQL's last word when it ends a session (FATAL 57P01 "terminating
  // connection due to administrator command") tells the application that its COMMIT did
  // not happen; destroyed at once, the application saw only "Connection terminated".
  const fail = () => { client.destroy(); upstream.destroy(); };
  client.on("error", fail).on("close", (hadError) => (hadError ? fail() : upstream.end()));
  upstream.on("error", fail).on("close", (hadError) => (hadError ? fail() : client.end()));
}).listen(5432, () => console.log(`endpoint: -> ${target.host}:${target.port}`));

http.createServer((req, res) => {
  const to = new URL(req.url, "http://x").searchParams.get("to");
  try {
    if (req.method !== "POST" || !to) throw new Error("POST /move?to=HOST:PORT");
    target = parseTarget(to);
    console.log(`endpoint: moved to ${target.host}:${target.port}`);
    res.end(`moved to ${to}\n`);
  } catch (e) {
    res.statusCode = 400;
    res.end(`${e.message}\n`);
  }
}).listen(5480, "127.0.0.1");
