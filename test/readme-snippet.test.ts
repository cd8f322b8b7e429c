// The README's wiring snippet, copied as it is, protects the site it configures (issue 21):
// nginx runs the fenced block of the OpenResty wiring section, taken from README.md's own
// text with only the backend's address, a listen port and the top-level lines a container
// needs added around it, and `intermission run -- CMD` with no --scope holds the site's
// requests while CMD stops and restarts the backend under client load. The snippet puts
// a scope in `location /` and none in the control location: that pause goes to the scope
// `default`, the whole node. A control location that names another scope than the site's
// is a mismatch nothing can prevent: then `run` must warn, naming both scopes.
//
// The node runs with the host's network, as the user's nginx did: the snippet allows the
// control API from 127.0.0.1 only (and 10.0.0.0/8), where the CLI runs.
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { GenericContainer, StartedTestContainer } from "testcontainers";
import { ensureImages, IMAGE, ROOT } from "./harness/node.ts";
import { get, waitFor } from "./harness/http.ts";

const CLI = path.join(ROOT, "bin/intermission.js");
const CONF = "/etc/intermission/nginx.conf";
const BACKEND_CONF = "/etc/intermission/backend.conf";
const ALARMING = /\[(error|crit|alert|emerg)\]|runtime error|_G write guard/;

/** The README's fenced nginx block in "Wiring it into OpenResty" that has the retry location. */
function readmeSnippet(): string {
  const readme = readFileSync(path.join(ROOT, "README.md"), "utf8");
  const start = readme.indexOf("\n## Wiring it into OpenResty\n");
  assert.ok(start >= 0, "README has the OpenResty wiring section");
  const end = readme.indexOf("\n## ", start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  const blocks = [...section.matchAll(/```nginx\n([\s\S]*?)```/g)].map((m) => m[1]);
  const snippet = blocks.find((b) => b.includes("location @intermission_retry"));
  assert.ok(snippet, "the section has a fenced nginx block with location @intermission_retry");
  return snippet;
}

/**
 * The snippet as nginx's whole configuration: the lines it leaves to the user added
 * around it (the lua module, pid, events, the backend's address, a listen port), each
 * only where the snippet has none of its own; its own lines unchanged but for the
 * backend's address and the listen port, if it has them.
 */
function configFrom(snippet: string, port: number, backendPort: number): string {
  const has = (re: RegExp) => re.test(snippet);
  const out: string[] = [];
  if (!has(/^\s*(include \/etc\/nginx\/modules-enabled|load_module )/m)) {
    out.push("include /etc/nginx/modules-enabled/*.conf;   # Debian's lua-nginx-module (the image)");
  }
  if (!has(/^\s*pid /m)) out.push("pid /run/nginx.pid;");
  if (!has(/^\s*events\s*\{/m)) out.push("events {}");
  const ownUpstream = has(/^\s*upstream backend\s*\{/m);
  const ownListen = has(/^\s*listen\s/m);
  let http = 0;
  let server = 0;
  let inUpstream = false;
  for (const line of snippet.split("\n")) {
    if (/^\s*upstream backend\s*\{/.test(line)) inUpstream = true;
    if (inUpstream && /\bserver\s+[^;]+;/.test(line)) {
      out.push(line.replace(/server\s+[^;\s]+/, `server 127.0.0.1:${backendPort}`));
    } else if (ownListen && /^\s*listen\s/.test(line)) {
      out.push(line.replace(/listen\s+[^;]+;/, `listen 127.0.0.1:${port};`));
    } else {
      out.push(line);
    }
    if (inUpstream && /\}/.test(line)) inUpstream = false;
    if (/^http \{\s*$/.test(line)) {
      http++;
      if (!ownUpstream) out.push(`    upstream backend { server 127.0.0.1:${backendPort}; }`);
    }
    if (/^    server \{\s*$/.test(line)) {
      server++;
      if (!ownListen) out.push(`        listen 127.0.0.1:${port};`);
    }
  }
  assert.equal(http, 1, "the snippet has one http block");
  assert.equal(server, 1, "the snippet has one server block");
  return out.join("\n");
}

/** The application behind it: a second nginx that CMD stops and starts again. */
const backendConf = (port: number) => `
pid /run/backend.pid;
error_log /var/log/nginx/backend-error.log;
events {}
http {
    access_log off;
    server {
        listen 127.0.0.1:${port};
        location / { return 200 "ok\\n"; }
    }
}`;

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((r) => server.close(r));
  return port;
}

interface Site {
  container: StartedTestContainer;
  port: number;
  url: (p: string) => string;
  errorLog: () => Promise<string>;
}

const started: StartedTestContainer[] = [];

async function startSite(snippet: string): Promise<Site> {
  ensureImages();
  const [port, backendPort] = [await freePort(), await freePort()];
  const container = await new GenericContainer(IMAGE)
    .withNetworkMode("host")
    .withCopyContentToContainer([
      { content: configFrom(snippet, port, backendPort), target: CONF },
      { content: backendConf(backendPort), target: BACKEND_CONF },
    ])
    .withCommand(["sh", "-c", `nginx -c ${BACKEND_CONF} && exec nginx -c ${CONF} -g 'daemon off;'`])
    .withStartupTimeout(30_000)
    .start();
  started.push(container);
  const url = (p: string) => `http://127.0.0.1:${port}${p}`;
  await waitFor("the site answering", async () => (await get(url("/"), { timeoutMs: 2000 }).catch(() => undefined))?.status === 200);
  return { container, port, url, errorLog: async () => (await container.exec(["cat", "/var/log/nginx/error.log"])).output };
}

interface Load {
  stop: () => Promise<Map<string, number>>;
  total: () => number;
}

/** `loops` clients, each sending one request after another until stopped; counts outcomes. */
function load(site: Site, loops: number): Load {
  const outcomes = new Map<string, number>();
  let running = true;
  let total = 0;
  const loop = async (n: number) => {
    for (let k = 0; running; k++) {
      const outcome = await get(site.url(`/?id=l${n}-${k}`), { timeoutMs: 60_000 }).then((r) => String(r.status), (e: Error) => `error: ${e.message}`);
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
      total++;
    }
  };
  const all = Promise.all(Array.from({ length: loops }, (_, n) => loop(n)));
  return {
    stop: async () => {
      running = false;
      await all;
      return outcomes;
    },
    total: () => total,
  };
}

function runCli(args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "inherit", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (c) => (stderr += c));
    child.on("exit", (code) => resolve({ code: code ?? -1, stderr }));
  });
}

async function assertCleanLog(site: Site): Promise<void> {
  const bad = (await site.errorLog()).split("\n").filter((l) => ALARMING.test(l));
  assert.deepEqual(bad, [], `unexpected lines in error.log:\n${bad.join("\n")}`);
}

describe("the README's OpenResty snippet, copied as it is", () => {
  after(async () => {
    for (const c of started) await c.stop().catch(() => undefined);
  });

  it("`intermission run -- CMD` with no --scope holds the site while CMD restarts the backend: 0 failed", async (t) => {
    const site = await startSite(readmeSnippet());
    const traffic = load(site, 8);
    await waitFor("load flowing", async () => traffic.total() >= 50);
    const id = site.container.getId();
    // CMD: the backend down for 3 s, then up again (nginx binds before it returns).
    const restart = `docker exec ${id} nginx -c ${BACKEND_CONF} -s stop && sleep 3 && docker exec ${id} nginx -c ${BACKEND_CONF}`;
    const run = await runCli(["--url", site.url("/_intermission"), "run", "--", "sh", "-c", restart]);
    const atResume = traffic.total();
    await waitFor("load after the resume", async () => traffic.total() >= atResume + 50);
    const outcomes = await traffic.stop();
    assert.equal(run.code, 0, run.stderr);
    const held = Number(/(\d+) request\(s\) were held at resume/.exec(run.stderr)?.[1]);
    assert.ok(held > 0, `the pause held the site's requests:\n${run.stderr}`);
    t.diagnostic(`load: ${[...outcomes].map(([o, n]) => `${o}=${n}`).join(" ")}; held at resume: ${held}`);
    const failed = [...outcomes].filter(([o]) => o !== "200");
    assert.deepEqual(failed, [], `every request succeeded (${[...outcomes].map(([o, n]) => `${o}=${n}`).join(" ")}):\n${run.stderr}`);
    assert.match(run.stderr, /paused http:\S+, drained; scope default \(whole node\)/);
    assert.doesNotMatch(run.stderr, /WARNING/);
    await assertCleanLog(site);
  });

  it("a control location that names another scope than the site's: run warns, naming both", async (t) => {
    const control = '            content_by_lua_block { require("intermission").control() }';
    const snippet = readmeSnippet();
    assert.equal(snippet.split(control).length, 2, "one control location");
    const site = await startSite(snippet.replace(control, `            set $intermission_scope other;\n${control}`));
    const traffic = load(site, 4);
    await waitFor("load flowing", async () => traffic.total() >= 20);
    const run = await runCli(["--url", site.url("/_intermission"), "run", "--", "sleep", "2"]);
    const outcomes = await traffic.stop();
    t.diagnostic(run.stderr.split("\n").filter((l) => l.includes("WARNING")).join(""));
    assert.equal(run.code, 0, `the exit status stays the command's:\n${run.stderr}`);
    assert.match(run.stderr, /paused http:\S+, drained; scope other\n/);
    assert.match(run.stderr, /0 request\(s\) were held at resume/);
    assert.match(run.stderr, /WARNING: http:\S+: the pause of scope other held nothing, while \d+ request\(s\) of scope\(s\) myapp \(\d+\) passed unheld: run with --scope myapp/);
    assert.ok((outcomes.get("200") ?? 0) > 0);
    await assertCleanLog(site);
  });
});
