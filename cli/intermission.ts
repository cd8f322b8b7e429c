#!/usr/bin/env node
// The intermission ops CLI: drive pause/resume on one node or a fleet.
import { parseArgs, UsageError, USAGE, Options } from "./args.ts";
import { version } from "./version.ts";
import { fanOut, NodeResult } from "./nodes.ts";
import { table, json } from "./format.ts";
import { run } from "./run.ts";
import { checkConfig } from "./check-config.ts";

/**
 * A line on stderr, which may be gone: after an ssh session drops, a write fails (EPIPE,
 * EIO), and that must not stop `run` from resuming the nodes. So a failing write is
 * dropped, and so is the error the stream reports for it later.
 */
const log = (line: string): void => {
  try {
    process.stderr.write(`intermission: ${line}\n`);
  } catch {
    // stderr is gone: nobody to tell.
  }
};
process.stderr.on("error", () => undefined);

function report(o: Options, results: NodeResult[]): number {
  if (o.json) {
    process.stdout.write(json(results) + "\n");
  } else {
    process.stdout.write(table(results) + "\n");
    for (const r of results) if (!r.ok) log(r.error ?? `${r.url}: failed`);
  }
  return results.every((r) => r.ok) ? 0 : 1;
}

async function status(o: Options): Promise<number> {
  const once = () => fanOut(o.urls, "status", "GET", { scope: o.scope }, o.token, o.timeout);
  if (!o.watch) return report(o, await once());
  for (;;) {
    const results = await once();
    if (!o.json) process.stdout.write("\x1b[2J\x1b[H" + new Date().toISOString() + "\n");
    report(o, results);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function main(argv: string[]): Promise<number> {
  let o: Options;
  try {
    const parsed = parseArgs(argv, process.env);
    if (parsed.kind === "help") {
      process.stdout.write(USAGE + "\n");
      return 0;
    }
    if (parsed.kind === "version") {
      process.stdout.write(version() + "\n");
      return 0;
    }
    o = parsed;
  } catch (e) {
    if (e instanceof UsageError) {
      if (e.message) process.stderr.write(`intermission: ${e.message}\n`);
      process.stderr.write(USAGE + "\n");
      return 2;
    }
    throw e;
  }
  switch (o.command) {
    case "status":
      return status(o);
    case "run":
      return run(o, log);
    case "check-config":
      return checkConfig({ nginx: o.nginx, conf: o.conf, prefix: o.prefix, timeout: o.timeout }, log);
    default: {
      const drain = o.command === "pause" && o.drain !== undefined ? Number(o.drain) : 0;
      const params = o.command === "resume" ? { scope: o.scope } : { ttl: o.ttl, reason: o.reason, scope: o.scope, drain: o.drain };
      const results = await fanOut(o.urls, o.command, "POST", params, o.token, o.timeout + drain);
      const status = report(o, results);
      const unknown = results.filter((r) => r.applied === "unknown");
      if (unknown.length > 0) {
        // The one answer that leaves the fleet's state open: say what to do about it.
        const lasting = o.command === "maintenance" && o.ttl === undefined ? " (maintenance with no ttl lasts until resumed)" : "";
        log(`the ${o.command} on ${unknown.length} node(s) may or may not take effect${lasting}: ` +
          (o.command === "resume" ? "run resume again" : "run `intermission resume` to be sure it does not") +
          " once the node and its Redis answer; `intermission status` shows the state");
      }
      return status;
    }
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    log(`unexpected failure: ${e instanceof Error ? e.stack : String(e)}`);
    process.exit(1);
  },
);
