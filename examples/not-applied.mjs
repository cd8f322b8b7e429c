// "Not applied": a Node `http` middleware that tells intermission (behind nginx) to hold a
// request and send it again when the application failed it before doing anything, here:
// no database connection could be had before any write. nginx's own idiom,
// `X-Accel-Redirect: @intermission_retry`, makes nginx drop this response and jump to the
// retry location with the same method and body (README "Unplanned outages").
//
//   node examples/not-applied.mjs     # listens on :3000, with a fake pool that fails at first
import http from "node:http";

/**
 * What a handler throws when its database connection was lost before it committed
 * anything (the database rolled the transaction back): nothing was applied either.
 */
export class NoConnection extends Error {}

/**
 * Wraps a handler `(req, res, db) => Promise<void>`: `getConnection()` runs before the
 * handler, so a failure there means the request did nothing, and is answered "not applied";
 * so is a `NoConnection` the handler throws before it sent anything. Its other errors are
 * the application's: they pass as they are.
 */
export function notApplied(getConnection, handler) {
  return async (req, res) => {
    const notApplied = (err) => {
      if (res.headersSent) return res.destroy(err);
      res.writeHead(200, { "X-Accel-Redirect": "@intermission_retry" }); // nginx keeps method and body
      res.end();
    };
    let db;
    try {
      db = await getConnection();
    } catch (err) {
      return notApplied(err);
    }
    try {
      await handler(req, res, db);
    } catch (err) {
      if (err instanceof NoConnection) return notApplied(err);
      if (!res.headersSent) res.writeHead(500, { "Content-Type": "text/plain" });
      res.end("internal error\n");
    } finally {
      db.release?.();
    }
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  // A fake pool: the first two connection attempts fail (a database restarting).
  let attempts = 0;
  const getConnection = async () => {
    if (++attempts <= 2) throw new NoConnection("database unavailable");
    return { query: async () => ({ rows: [{ ok: 1 }] }), release() {} };
  };
  http.createServer(notApplied(getConnection, async (req, res, db) => {
    const { rows } = await db.query("INSERT INTO orders DEFAULT VALUES RETURNING 1 AS ok");
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify(rows[0]) + "\n");
  })).listen(3000, () => console.log("listening on :3000"));
}
