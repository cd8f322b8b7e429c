// The CLI's run --ready against two real nodes: after CMD the pause holds until the
// readiness URL (a server of the test's own, on loopback, that it makes refuse, answer
// 503 or answer 200) answers 2xx, then every node resumes; a URL that never does ends in
// a resume anyway and a non-zero exit; a signal during the wait still resumes.
import { describe, it, before, after, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { NginxNode, ROOT } from "./harness/node.ts";
import { waitFor } from "./harness/http.ts";

const CLI = path.join(ROOT, "bin/intermission.js");
const TOKEN = "cli-ready-token-0123456789";

/** A loopback port that nothing listens on: bound, then released. */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((r) => server.close(r));
  return port;
}

/** The application's readiness endpoint, as the test wants it: refusing, 503 or 200. */
class ReadyEndpoint {
  answer = 503;
  /** Every probe that reached it, with what the test needs to know about it. */
  probes: { at: number; authorization?: string; answered: number }[] = [];
  /** Called for each probe; lets a test record the world as the probe saw it. */
  onProbe: () => void = () => undefined;
  private server?: http.Server;

  constructor(readonly port: number) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}/up`;
  }

  async listen(answer: number): Promise<void> {
    this.answer = answer;
    this.server = http.createServer((req, res) => {
      this.onProbe();
      this.probes.push({ at: Date.now(), authorization: req.headers.authorization, answered: this.answer });
      res.statusCode = this.answer;
      res.end(this.answer === 200 ? "ready\n" : "starting\n");
    });
    await new Promise<void>((r) => this.server!.listen(this.port, "127.0.0.1", r));
  }

  async close(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise((r) => this.server!.close(r));
    this.server = undefined;
  }
}

interface Cli {
  exit: Promise<number>;
  stdout: () => string;
  stderr: () => string;
  kill: (signal: NodeJS.Signals) => void;
}

function cli(args: string[]): Cli {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (c) => (out += c));
  child.stderr.on("data", (c) => (err += c));
  return {
    exit: new Promise((resolve) => child.on("exit", (code, signal) => resolve(code ?? (signal ? -1 : 1)))),
    stdout: () => out,
    stderr: () => err,
    kill: (s) => child.kill(s),
  };
}

const escape = (s: string) => s.replace(/[/.?()[\]]/g, "\\$&");

describe("CLI run --ready against two nodes", () => {
  let a: NginxNode;
  let b: NginxNode;
  let urls: string[];
  let endpoints: ReadyEndpoint[] = [];
  const endpoint = async () => {
    const ep = new ReadyEndpoint(await freePort());
    endpoints.push(ep);
    return ep;
  };
  const bothPaused = () => waitFor("both nodes paused", async () => (await a.status()).state === "paused" && (await b.status()).state === "paused");

  before(async () => {
    [a, b] = await Promise.all([
      NginxNode.start({ setup: { control_token: TOKEN } }),
      NginxNode.start({ setup: { control_token: TOKEN } }),
    ]);
    for (const n of [a, b]) n.controlHeaders = { Authorization: `Bearer ${TOKEN}` };
    urls = [...[a, b].flatMap((n) => ["--url", n.url("/_intermission")]), "--token", TOKEN];
  });
  after(async () => Promise.all([a?.stop(), b?.stop()]));
  beforeEach(async () => Promise.all([a.reset(), b.reset()]));
  afterEach(async () => {
    await Promise.all(endpoints.map((e) => e.close()));
    endpoints = [];
    await a.assertCleanLog();
    await b.assertCleanLog();
  });

  it("a URL that is ready at once: one probe, after CMD, without the token; then every node resumes", async () => {
    const ep = await endpoint();
    await ep.listen(200);
    const marker = path.join(mkdtempSync(path.join(os.tmpdir(), "im-")), "ran");
    let cmdHadRun: boolean | undefined;
    ep.onProbe = () => (cmdHadRun = existsSync(marker));
    const run = cli([...urls, "run", "--no-drain", "--ready", ep.url, "--", "touch", marker]);
    assert.equal(await run.exit, 0, run.stderr());
    assert.equal(ep.probes.length, 1, run.stderr());
    assert.equal(cmdHadRun, true, "the probe comes after CMD");
    assert.equal(ep.probes[0].authorization, undefined, "the control token is not sent to the application");
    assert.match(run.stderr(), new RegExp(`ready: ${escape(ep.url)} answered 200 after 0\\.\\ds \\(1 attempt\\(s\\)\\)`));
    for (const n of [a, b]) assert.equal((await n.status()).state, "running");
  });

  it("a URL that refuses, then answers 503, then 200: the nodes stay paused, held requests held, until it answers 200", async () => {
    const ep = await endpoint(); // not listening yet: connection refused
    const run = cli([...urls, "run", "--no-drain", "--ready", ep.url, "--", "true"]);
    await bothPaused();
    const released: Record<string, number> = {};
    const held = [a, b].map((n, i) => {
      const r = n.send(`/?id=held-${i}`);
      r.reply.then(() => (released[i] = Date.now()), () => undefined);
      return r;
    });
    await a.held(1);
    await b.held(1);
    await waitFor("connection refused reported", async () =>
      run.stderr().includes(`not ready yet: ${ep.url}: unreachable (connection refused)`));

    await ep.listen(503);
    // Ten probes answered 503: about two seconds of polling at 0.2 s.
    await waitFor("ten probes answered 503", async () => ep.probes.length >= 10);
    assert.ok(run.stderr().includes(`not ready yet: ${ep.url}: answered 503`), run.stderr());
    for (const n of [a, b]) {
      const s = await n.status();
      assert.equal(s.state, "paused", "still paused while the URL is not ready");
      assert.equal(s.held, 1);
    }
    assert.deepEqual(released, {}, "no held request is released before the URL is ready");

    const readyAt = Date.now();
    ep.answer = 200;
    assert.equal(await run.exit, 0, run.stderr());
    for (const r of held) assert.equal((await r.reply).status, 200);
    for (const i of [0, 1]) assert.ok(released[i] >= readyAt, `held request ${i} released only after the URL answered 200`);
    for (const n of [a, b]) assert.equal((await n.status()).state, "running");
    const waited = run.stderr().match(new RegExp(`ready: ${escape(ep.url)} answered 200 after (\\d+\\.\\d)s \\((\\d+) attempt\\(s\\)\\)`));
    assert.ok(waited, run.stderr());
    assert.ok(Number(waited[1]) >= 1.5, `waited ${waited[1]}s`);
    assert.ok(Number(waited[2]) >= 11);
    assert.match(run.stderr(), /paused for \d+\.\ds; 2 request\(s\) were held at resume/);
  });

  it("a URL that never answers 2xx: resumes anyway after --ready-timeout, says so, exits 69", async () => {
    const ep = await endpoint();
    await ep.listen(503);
    const run = cli([...urls, "run", "--no-drain", "--ready", ep.url, "--ready-timeout", "1", "--", "true"]);
    await bothPaused();
    const held = a.send("/?id=held");
    assert.equal(await run.exit, 69, run.stderr());
    assert.ok(run.stderr().includes(`NOT READY: ${ep.url} did not answer 2xx within 1s (last: answered 503); ` +
      "resuming anyway, exit status 69"), run.stderr());
    assert.ok(ep.probes.length >= 3, `polled ${ep.probes.length} time(s)`);
    assert.match(run.stderr(), /resumed .*released/);
    for (const n of [a, b]) assert.equal((await n.status()).state, "running");
    assert.equal((await held.reply).status, 200);
  });

  it("CMD's failure wins over a URL that never answers (here: nothing listens)", async () => {
    const ep = await endpoint(); // never listens
    const run = cli([...urls, "run", "--no-drain", "--ready", ep.url, "--ready-timeout", "0.5", "--", "sh", "-c", "exit 3"]);
    assert.equal(await run.exit, 3, run.stderr());
    assert.ok(run.stderr().includes(`NOT READY: ${ep.url} did not answer 2xx within 0.5s ` +
      "(last: unreachable (connection refused)); resuming anyway\n"), run.stderr());
    for (const n of [a, b]) assert.equal((await n.status()).state, "running");
  });

  it("SIGINT or SIGTERM during the wait ends it and resumes every node", async () => {
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      const ep = await endpoint();
      await ep.listen(503);
      const run = cli([...urls, "run", "--no-drain", "--ready", ep.url, "--", "true"]);
      await bothPaused();
      const held = b.send(`/?id=${signal}`);
      await b.held(1);
      await waitFor("the wait polling", async () => ep.probes.length >= 2);
      run.kill(signal);
      assert.equal(await run.exit, signal === "SIGINT" ? 130 : 143, run.stderr());
      assert.ok(run.stderr().includes(`got ${signal}: no longer waiting for ${ep.url}; resuming`), run.stderr());
      assert.match(run.stderr(), new RegExp(`waited \\d+\\.\\ds for ${escape(ep.url)}, then interrupted`));
      for (const n of [a, b]) assert.equal((await n.status()).state, "running", `${signal}: resumed`);
      assert.equal((await held.reply).status, 200);
    }
  });

  it("--ready and --ready-timeout outside run, or malformed, are usage errors (exit 2); --help shows them", async () => {
    const messages: [string[], string][] = [
      [["status", "--ready", "http://127.0.0.1:3000/up"], "--ready goes with run"],
      [["pause", "--ready-timeout", "5"], "--ready-timeout goes with run"],
      [["resume", "--ready", "http://127.0.0.1:3000/up", "--ready-timeout", "5"], "--ready goes with run"],
      [["run", "--ready-timeout", "5", "--", "true"], "--ready-timeout needs --ready URL"],
      [["run", "--ready", "127.0.0.1:3000/up", "--", "true"], "--ready takes an http:// or https:// URL, got 127.0.0.1:3000/up"],
      [["run", "--ready", "http://", "--", "true"], "--ready takes an http:// or https:// URL, got http://"],
      [["run", "--ready", "http://127.0.0.1:3000/up", "--ready-timeout", "0", "--", "true"], "--ready-timeout takes a positive number of seconds"],
      [["run", "--ready", "http://127.0.0.1:3000/up", "--ready-timeout", "soon", "--", "true"], "--ready-timeout takes a positive number of seconds"],
      [["run", "--ready", "--", "true"], "--ready needs a value"],
    ];
    for (const [args, message] of messages) {
      const c = cli(args);
      assert.equal(await c.exit, 2, args.join(" "));
      assert.ok(c.stderr().startsWith(`intermission: ${message}\n`), c.stderr());
      assert.match(c.stderr(), /usage: intermission/);
    }
    const help = cli(["--help"]);
    assert.equal(await help.exit, 0);
    assert.match(help.stdout(), /\[--ready URL \[--ready-timeout S\]\] -- CMD/);
    assert.match(help.stdout(), /--ready-timeout \(default 60s\)/);
    assert.match(help.stdout(), /exit 69/);
  });
});
