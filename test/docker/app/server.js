// The application behind intermission: one short write transaction per request through
// a pool of 10 connections, and no retry logic of its own, like most applications.
//   GET /write?id=ID   insert a row carrying ID, read the row count; 200 {"id","count"},
//                      500 {"error"} on any database error
//   GET /healthz       200 once this process listens (it does not touch the database)
// PGHOST/PGPORT name the floating endpoint in front of the primary; PORT (3000) and HOST
// (every address) say where it listens; APP_BOOT_MS delays listening (see below).
// SIGTERM stops gracefully: no new connections, in-flight requests finish, then the
// process exits.
"use strict";
const http = require("node:http");
const { Pool } = require("pg");

const pool = new Pool({
  host: process.env.PGHOST ?? "endpoint",
  port: Number(process.env.PGPORT ?? 5432),
  user: "app",
  database: "app",
  max: 10,
  connectionTimeoutMillis: 5000,
});
// A connection the server ended (restart, switchover) reports it as an event, idle or
// not, even after the pool has dropped it; the query on it, if any, fails (a 500).
pool.on("connect", (client) => client.on("error", (e) => console.error(`app: connection lost: ${e.message}`)));
pool.on("error", () => {}); // the pool's copy of an idle connection's error, logged above

async function write(id) {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    await client.query("INSERT INTO hits (id) VALUES ($1)", [id]);
    const { rows } = await client.query("SELECT count(*)::int AS count FROM hits");
    await client.query("COMMIT");
    client.release();
    return rows[0].count;
  } catch (e) {
    client.release(e); // a connection that failed is closed, not reused
    throw e;
  }
}

let stopping = false;
const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, "http://app");
  const reply = (status, body) => {
    // A stopping process closes each connection after its answer, so it can exit.
    if (stopping) res.setHeader("Connection", "close");
    res.writeHead(status, { "Content-Type": "application/json" });
    res.end(JSON.stringify(body));
  };
  if (url.pathname === "/healthz") return reply(200, { ok: true, pid: process.pid });
  if (url.pathname !== "/write") return reply(404, { error: "not found" });
  const id = url.searchParams.get("id");
  if (!id) return reply(400, { error: "id is required" });
  try {
    reply(200, { id, count: await write(id) });
  } catch (e) {
    reply(500, { error: e.message });
  }
});
server.keepAliveTimeout = 65_000;
// A real application takes a while to boot (loading code, warming caches); this one
// would listen within ~0.2 s. APP_BOOT_MS stands in for the rest, so that the gap
// between a restart script returning and the new process listening is as real as it
// is in production, not a coin toss.
setTimeout(() => {
  server.listen(Number(process.env.PORT ?? 3000), process.env.HOST || undefined, () => console.log(`app: pid ${process.pid} listening`));
}, Number(process.env.APP_BOOT_MS ?? 0));

process.on("SIGTERM", () => {
  stopping = true;
  server.close(() => pool.end().then(() => process.exit(0)));
  server.closeIdleConnections();
  // A client that keeps a connection open without sending anything does not hold it up.
  setTimeout(() => process.exit(0), 10_000).unref();
});
