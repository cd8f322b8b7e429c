// The ops CLI against two real nodes (and one that is down): run's all-or-nothing
// pause, resume after a failing or interrupted command, and clear failures.
import { describe, it, before, after, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import os from "node:os";
import net from "node:net";
import path from "node:path";
import { NginxNode, ROOT } from "./harness/node.ts";
import { waitFor } from "./harness/http.ts";

const CLI = path.join(ROOT, "bin/intermission.js");
const TOKEN = "cli-token-0123456789abcdef";

/** A loopback port that nothing listens on: bound, then released. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((r) => server.close(r));
  return port;
}

interface Cli {
  exit: Promise<number>;
  stdout: () => string;
  stderr: () => string;
  kill: (signal: NodeJS.Signals) => void;
  /** Closes the read end of the CLI's stderr, as an ssh session that drops does: its writes fail. */
  closeStderr: () => void;
}

function cli(args: string[], env: Record<string, string> = {}): Cli {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (c) => (out += c));
  child.stderr.on("data", (c) => (err += c));
  return {
    exit: new Promise((resolve) => child.on("exit", (code, signal) => resolve(code ?? (signal ? -1 : 1)))),
    stdout: () => out,
    stderr: () => err,
    kill: (s) => child.kill(s),
    closeStderr: () => child.stderr.destroy(),
  };
}

describe("CLI against two nodes", () => {
  let a: NginxNode;
  let b: NginxNode;
  let urls: string[];
  before(async () => {
    [a, b] = await Promise.all([
      NginxNode.start({ setup: { control_token: TOKEN } }),
      NginxNode.start({ setup: { control_token: TOKEN } }),
    ]);
    for (const n of [a, b]) n.controlHeaders = { Authorization: `Bearer ${TOKEN}` };
    urls = [a, b].flatMap((n) => ["--url", n.url("/_intermission")]);
  });
  after(async () => Promise.all([a?.stop(), b?.stop()]));
  beforeEach(async () => Promise.all([a.reset(), b.reset()]));
  afterEach(async () => {
    await a.assertCleanLog();
    await b.assertCleanLog();
  });

  it("status prints a table per node, and JSON with --json", async () => {
    const table = cli([...urls, "status"], { INTERMISSION_TOKEN: TOKEN });
    assert.equal(await table.exit, 0, table.stderr());
    assert.match(table.stdout(), /^node\s+scope\s+state\s+held\s+queued\s+in flight/);
    assert.equal(table.stdout().split("\n").filter((l) => /default \(whole node\)\s+running/.test(l)).length, 2, "each node names the scope it answered for");
    assert.equal(table.stdout().split("\n").filter((l) => /running/.test(l)).length, 2);
    const json = cli([...urls, "--token", TOKEN, "--json", "status"]);
    assert.equal(await json.exit, 0);
    const parsed = JSON.parse(json.stdout());
    assert.equal(parsed.length, 2);
    assert.ok(parsed.every((r: any) => r.ok && r.body.state === "running"));
  });

  it("pause and resume fan out to every node; a wrong token is a clear failure", async () => {
    const p = cli([...urls, "--token", TOKEN, "pause", "--ttl", "60", "--reason", "cli test"]);
    assert.equal(await p.exit, 0, p.stderr());
    for (const n of [a, b]) assert.equal((await n.status()).state, "paused");
    const bad = cli([...urls, "--token", "wrong-token-0123456789", "resume"]);
    assert.equal(await bad.exit, 1);
    assert.match(bad.stderr(), /token was refused \(401\)/);
    for (const n of [a, b]) assert.equal((await n.status()).state, "paused", "a 401 changes nothing");
    const r = cli([...urls, "--token", TOKEN, "resume"]);
    assert.equal(await r.exit, 0, r.stderr());
    for (const n of [a, b]) assert.equal((await n.status()).state, "running");
  });

  it("pause and resume tables name the scope each node acted on", async () => {
    const p = cli([...urls, "--token", TOKEN, "pause", "--scope", "other", "--ttl", "60"]);
    assert.equal(await p.exit, 0, p.stderr());
    const rows = p.stdout().split("\n");
    assert.match(rows[0], /^node\s+scope\s+state/);
    assert.equal(rows.filter((l) => /^http\S+\s+other\s+paused/.test(l)).length, 2, p.stdout());
    const r = cli([...urls, "--token", TOKEN, "resume", "--scope", "other"]);
    assert.equal(await r.exit, 0, r.stderr());
    assert.equal(r.stdout().split("\n").filter((l) => /^http\S+\s+other\s+running/.test(l)).length, 2, r.stdout());
    const d = cli([...urls, "--token", TOKEN, "resume"]);
    assert.equal(await d.exit, 0, d.stderr());
    assert.equal(d.stdout().split("\n").filter((l) => /^http\S+\s+default \(whole node\)\s+running/.test(l)).length, 2, d.stdout());
    // A scope that runs while the whole node is paused says so: its requests are held.
    for (const n of [a, b]) assert.equal((await n.control("pause")).status, 200);
    const s = cli([...urls, "--token", TOKEN, "status", "--scope", "other"]);
    assert.equal(await s.exit, 0, s.stderr());
    assert.equal(s.stdout().split("\n").filter((l) => /^http\S+\s+other\s+paused \(whole node\)/.test(l)).length, 2, s.stdout());
  });

  it("run resumes every node after a failing command and exits with its status", async () => {
    const held = a.send("/?id=during-run");
    const run = cli([...urls, "--token", TOKEN, "run", "--no-drain", "--", "sh", "-c",
      // While CMD runs both nodes are paused: check it from inside, then fail with 3.
      `sleep 0.5; exit 3`]);
    await waitFor("both nodes paused", async () => (await a.status()).state === "paused" && (await b.status()).state === "paused");
    const code = await run.exit;
    assert.equal(code, 3, run.stderr());
    for (const n of [a, b]) assert.equal((await n.status()).state, "running");
    assert.equal((await held.reply).status, 200);
    assert.match(run.stderr(), /resumed .*released/);
    assert.match(run.stderr(), /paused for \d+\.\ds; \d+ request\(s\) were held at resume/);
  });

  it("run exits 128+signal for a command killed by any signal, and resumes", async () => {
    // Each signal's number on this platform (SIGUSR1 is 10 on Linux, 30 on macOS).
    for (const signal of ["SIGQUIT", "SIGABRT", "SIGUSR1", "SIGSEGV", "SIGPIPE", "SIGALRM"] as const) {
      const run = cli([...urls, "--token", TOKEN, "run", "--no-drain", "--", "sh", "-c", `ulimit -c 0; kill -${signal.slice(3)} $$`]);
      assert.equal(await run.exit, 128 + os.constants.signals[signal], `${signal}: ${run.stderr()}`);
      for (const n of [a, b]) assert.equal((await n.status()).state, "running", `${signal}: resumed`);
    }
  });

  it("run resumes every node when interrupted by a signal", async () => {
    for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
      const run = cli([...urls, "--token", TOKEN, "run", "--", "sleep", "30"]);
      await waitFor("both nodes paused", async () => (await a.status()).state === "paused" && (await b.status()).state === "paused");
      await waitFor("the command running", async () => /paused http/.test(run.stderr()));
      run.kill(signal);
      const code = await run.exit;
      assert.equal(code, { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 }[signal], run.stderr());
      assert.match(run.stderr(), new RegExp(`got ${signal}: passing it to the command, then resuming`));
      for (const n of [a, b]) assert.equal((await n.status()).state, "running", `${signal}: resumed`);
    }
  });

  it("run resumes every node on SIGHUP after its stderr is gone (an ssh session that drops)", async () => {
    const run = cli([...urls, "--token", TOKEN, "run", "--", "sleep", "30"]);
    await waitFor("both nodes paused", async () => (await a.status()).state === "paused" && (await b.status()).state === "paused");
    await waitFor("the command running", async () => /paused http/.test(run.stderr()));
    // Every line run writes from here on fails (EPIPE): none may stop the resume.
    run.closeStderr();
    run.kill("SIGHUP");
    assert.equal(await run.exit, 129);
    for (const n of [a, b]) assert.equal((await n.status()).state, "running", "resumed");
  });

  it("run interrupted before the command starts (during the drain) resumes and runs nothing", async () => {
    const marker = path.join(mkdtempSync(path.join(os.tmpdir(), "im-")), "ran");
    const slow = a.send("/?id=slow&delay=2");
    await waitFor("the slow request at the upstream", async () => (await a.arrivals()).active === 1);
    const run = cli([...urls, "--token", TOKEN, "run", "--drain", "5", "--", "touch", marker]);
    await waitFor("both nodes paused", async () => (await a.status()).state === "paused" && (await b.status()).state === "paused");
    run.kill("SIGINT");
    assert.equal(await run.exit, 130, run.stderr());
    assert.match(run.stderr(), /got SIGINT: touch will not run; resuming/);
    assert.equal(existsSync(marker), false, "the command must not run");
    for (const n of [a, b]) assert.equal((await n.status()).state, "running");
    assert.equal((await slow.reply).status, 200);
  });

  it("run with one node down pauses nothing for long, runs nothing, and says which node", async () => {
    const marker = path.join(mkdtempSync(path.join(os.tmpdir(), "im-")), "ran");
    const down = `http://127.0.0.1:${await closedPort()}/_intermission`;
    const run = cli([...urls, "--url", down, "--token", TOKEN, "run", "--", "touch", marker]);
    const code = await run.exit;
    assert.notEqual(code, 0);
    assert.ok(run.stderr().includes(`FAILED to pause ${down}: unreachable (connection refused)`), run.stderr());
    assert.match(run.stderr(), /resuming the 2 node\(s\) that did pause/);
    assert.equal(existsSync(marker), false, "the command must not run");
    for (const n of [a, b]) assert.equal((await n.status()).state, "running");
  });

  it("run refuses a scope in maintenance: pauses nothing, runs nothing, names the node, exits 75", async () => {
    const marker = path.join(mkdtempSync(path.join(os.tmpdir(), "im-")), "ran");
    assert.equal((await a.control("maintenance", "reason=db+migration+by+ops")).status, 200);
    const run = cli([...urls, "--token", TOKEN, "run", "--no-drain", "--", "touch", marker]);
    assert.equal(await run.exit, 75, run.stderr());
    assert.ok(run.stderr().includes(`REFUSED: ${a.url("/_intermission")}: scope default (whole node) is in maintenance ` +
      `("db migration by ops", until resumed); run would end it with its resume`), run.stderr());
    assert.match(run.stderr(), /touch was not run; no node was paused: 1 node\(s\) in maintenance/);
    assert.doesNotMatch(run.stderr(), /paused http|resumed http/);
    assert.equal(existsSync(marker), false, "the command must not run");
    const st = await a.status();
    assert.equal(st.state, "maintenance", "the maintenance stays");
    assert.equal(st.reason, "db migration by ops");
    assert.equal((await b.status()).state, "running");
    // The whole node's maintenance refuses a run of another scope too: that scope's resume
    // would send what it held to the application mid-maintenance.
    const other = cli([...urls, "--token", TOKEN, "run", "--no-drain", "--scope", "other", "--", "touch", marker]);
    assert.equal(await other.exit, 75, other.stderr());
    assert.ok(other.stderr().includes(`REFUSED: ${a.url("/_intermission")}: the whole node (scope default) is in maintenance; ` +
      `run's resume of scope other would send the requests it held to the application during it`), other.stderr());
    assert.equal(existsSync(marker), false, "the command must not run");
    assert.equal((await a.status()).state, "maintenance");
    assert.equal((await b.status("other")).state, "running");
    // A scope's own maintenance refuses a run of that scope.
    assert.equal((await a.control("resume")).status, 200);
    assert.equal((await b.control("maintenance", "scope=other&ttl=600")).status, 200);
    const scoped = cli([...urls, "--token", TOKEN, "run", "--no-drain", "--scope", "other", "--", "touch", marker]);
    assert.equal(await scoped.exit, 75, scoped.stderr());
    assert.ok(scoped.stderr().includes(`REFUSED: ${b.url("/_intermission")}: scope other is in maintenance (no reason given, until `), scoped.stderr());
    assert.equal(existsSync(marker), false, "the command must not run");
    assert.equal((await b.status("other")).state, "maintenance");
    assert.equal((await b.control("resume", "scope=other")).status, 200);
  });

  it("run over a pause already in force joins it, and its resume ends it (as documented)", async () => {
    for (const n of [a, b]) assert.equal((await n.control("pause", "ttl=600&reason=someone+else")).status, 200);
    const run = cli([...urls, "--token", TOKEN, "run", "--no-drain", "--", "true"]);
    assert.equal(await run.exit, 0, run.stderr());
    assert.equal(run.stderr().match(/released 0 held request\(s\) \(was paused\)/g)?.length, 2, run.stderr());
    for (const n of [a, b]) assert.equal((await n.status()).state, "running");
  });

  it("reports a drain that did not finish", async () => {
    const slow = a.send("/?id=slow&delay=3");
    await waitFor("the slow request at the upstream", async () => (await a.arrivals()).active === 1);
    const run = cli([...urls, "--token", TOKEN, "run", "--drain", "0.5", "--", "true"]);
    assert.equal(await run.exit, 0, run.stderr());
    assert.match(run.stderr(), new RegExp(`paused ${a.url("/_intermission").replace(/[/.]/g, "\\$&")}, NOT drained: 1 request\\(s\\) still in flight after 0.5s`));
    assert.match(run.stderr(), new RegExp(`paused ${b.url("/_intermission").replace(/[/.]/g, "\\$&")}, drained`));
    assert.equal((await slow.reply).status, 200);
  });

  it("with --require-drain, a drain that did not finish resumes every node and runs nothing", async () => {
    const marker = path.join(mkdtempSync(path.join(os.tmpdir(), "im-")), "ran");
    const slow = a.send("/?id=slow&delay=3");
    await waitFor("the slow request at the upstream", async () => (await a.arrivals()).active === 1);
    const run = cli([...urls, "--token", TOKEN, "run", "--drain", "0.5", "--require-drain", "--", "touch", marker]);
    assert.equal(await run.exit, 75, run.stderr());
    assert.match(run.stderr(), /--require-drain: 1 node\(s\) did not drain within 0\.5s; resuming every node; touch was not run/);
    assert.equal(existsSync(marker), false, "the command must not run");
    for (const n of [a, b]) assert.equal((await n.status()).state, "running");
    assert.equal((await slow.reply).status, 200);
  });

  it("with --require-drain and every node drained, runs the command", async () => {
    const marker = path.join(mkdtempSync(path.join(os.tmpdir(), "im-")), "ran");
    const run = cli([...urls, "--token", TOKEN, "run", "--require-drain", "--", "touch", marker]);
    assert.equal(await run.exit, 0, run.stderr());
    assert.equal(existsSync(marker), true);
    assert.equal(run.stderr().match(/, drained/g)?.length, 2, run.stderr());
  });

  it("rejects bad usage with exit code 2", async () => {
    for (const args of [["bogus"], ["run"], ["run", "--drain", "1", "--no-drain", "--", "true"], ["pause", "--watch"], [],
      ["status", "--ttl"], ["--ttl", "--json", "pause"], ["--bogus", "status"], ["--json=yes", "status"],
      ["run", "--no-drain", "--require-drain", "--", "true"], ["pause", "--require-drain"], ["status", "resume"]]) {
      const c = cli(args);
      assert.equal(await c.exit, 2, args.join(" "));
      assert.match(c.stderr(), /usage: intermission/);
    }
    const messages: [string[], string][] = [
      [["status", "--ttl"], "--ttl needs a value"],
      [["--bogus", "status"], "unknown option --bogus"],
      [["status", "resume"], "unexpected argument resume"],
      [["bogus"], "unknown command bogus"],
      [["pause", "--", "x"], "pause takes no command after --"],
      [["--timeout", "0", "status"], "--timeout takes a positive number of seconds"],
      [["--url", "10.0.0.5", "status"], "--url must start with http:// or https://, got 10.0.0.5"],
    ];
    for (const [args, message] of messages) {
      const c = cli(args);
      assert.equal(await c.exit, 2, args.join(" "));
      assert.ok(c.stderr().startsWith(`intermission: ${message}\n`), c.stderr());
    }
  });

  it("--help shows the usage and run's drain default on stdout; --version the package's version", async () => {
    const help = cli(["--help"]);
    assert.equal(await help.exit, 0);
    assert.match(help.stdout(), /^usage: intermission/);
    assert.match(help.stdout(), /--drain, default\s+10s/);
    assert.match(help.stdout(), /--require-drain/);
    assert.match(help.stdout(), /--scope S\s+the scope to act on\. Without it: the control location's own scope\s+\(\$intermission_scope, else \$app_name\), else "default", which is the\s+whole node/);
    const { version } = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8"));
    for (const flag of ["--version", "-V"]) {
      const v = cli([flag]);
      assert.equal(await v.exit, 0);
      assert.equal(v.stdout(), `${version}\n`);
    }
  });
});
