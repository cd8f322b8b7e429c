// The application behind intermission: one short write transaction per request through
// a pool of 10 connections, and no retry logic of its own, like most applications.
//   GET /write?id=ID   insert a row carrying ID, read the row count; 200 {"id","count"},
//                      500 {"error"} on any database error
//   GET /write-na?id=ID the same behind the README's "not applied" middleware
//                      (examples/not-applied.mjs, copied beside this file when the image
//                      is built): no database connection before any write answers
//                      X-Accel-Redirect: @intermission_retry instead of a 500
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

/**
 * /write-na's connection: one from the pool with its transaction begun. Until BEGIN has
 * succeeded nothing is written, so a failure here (no connection, or a pooled one the
 * database has ended) is "no database connection before any write".
 */
async function connectAndBegin() {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
  } catch (e) {
    client.release(e);
    throw e;
  }
  return client;
}

/**
 * The connection itself was lost (the server ended the session: a shutdown, or the socket
 * closed), as opposed to an error of the statement.
 */
function connectionLost(e) {
  return ["57P01", "57P02", "57P03", "ECONNRESET", "EPIPE"].includes(e.code) || /^Connection terminated/.test(e.message) || notSent(e);
}

/** pg refused to send the query at all: the connection had already failed (its FATAL came first). */
function notSent(e) {
  return /^Client has encountered a connection error and is not queryable/.test(e.message);
}

/**
 * /write-na's transaction, on the connection the middleware got before it. A connection
 * lost before COMMIT was sent rolled the transaction back: nothing was applied, and the
 * middleware answers "not applied" (NoConnection). So did a COMMIT the server answered
 * with its shutdown's error (a SQLSTATE: the server ended the session instead of
 * committing; a commit's answer would have come first), and a COMMIT pg never sent (the
 * connection had failed before it: "not queryable"). A socket lost during the COMMIT
 * leaves the outcome unknown: an error like any other (a 500). (The test checks this
 * claim: a write applied and sent again would be a duplicate row.)
 */
async function writeOn(client, id, NoConnection) {
  let committing = false;
  try {
    await client.query("INSERT INTO hits (id) VALUES ($1)", [id]);
    const { rows } = await client.query("SELECT count(*)::int AS count FROM hits");
    committing = true;
    await client.query("COMMIT");
    return rows[0].count;
  } catch (e) {
    console.error(`app: /write-na ${id} failed after BEGIN${committing ? ", in its COMMIT" : ""}: ${e.message}`);
    await client.query("ROLLBACK").catch(() => {}); // the middleware gives the connection back
    if (connectionLost(e) && (!committing || /^57P0[123]$/.test(e.code ?? "") || notSent(e))) throw new NoConnection(e.message);
    throw e;
  }
}

let writeNotApplied; // set before the server listens (the middleware is an ES module)
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
  if (url.pathname !== "/write" && url.pathname !== "/write-na") return reply(404, { error: "not found" });
  const id = url.searchParams.get("id");
  if (!id) return reply(400, { error: "id is required" });
  if (url.pathname === "/write-na") return writeNotApplied(req, res);
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
const listening = import("./not-applied.mjs").then(({ notApplied, NoConnection }) => {
  writeNotApplied = notApplied(connectAndBegin, async (req, res, client) => {
    const id = new URL(req.url, "http://app").searchParams.get("id");
    const count = await writeOn(client, id, NoConnection); // another error is the application's: a 500
    if (stopping) res.setHeader("Connection", "close");
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ id, count }));
  });
});
setTimeout(() => listening.then(() => {
  server.listen(Number(process.env.PORT ?? 3000), process.env.HOST || undefined, () => console.log(`app: pid ${process.pid} listening`));
}), Number(process.env.APP_BOOT_MS ?? 0));

process.on("SIGTERM", () => {
  stopping = true;
  server.close(() => pool.end().then(() => process.exit(0)));
  server.closeIdleConnections();
  // A client that keeps a connection open without sending anything does not hold it up.
  setTimeout(() => process.exit(0), 10_000).unref();
});
