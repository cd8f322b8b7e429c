// "Take your database away without anyone noticing", on a real PostgreSQL 15 primary
// and streaming replica, a real application with a connection pool and no retry logic,
// and the sample nginx.conf: four maintenances under ~300 req/s from 16 connections,
// each once through the same nginx without intermission (requests must fail, or this
// tests nothing) and once inside `intermission run` (none may fail). Every request's id
// is written by the application; the rows must be exactly the requests answered 200.
import { describe, it, before, after, TestContext } from "node:test";
import assert from "node:assert/strict";
import { DatabaseStack } from "./harness/database.ts";
import { common, describeRun, RunResult, runScenario, Scenario, SCENARIOS } from "./harness/scenarios.ts";

const SECONDS = 10;
const LEAD_IN = 3;
/** A held request waits for the maintenance, then for its release: not much longer. */
const RELEASE_MARGIN_MS = 3000;

function report(t: TestContext, r: RunResult, problems: string[]): void {
  t.diagnostic(describeRun(r));
  assert.deepEqual(problems, [], `${describeRun(r)}\n${problems.join("\n")}`);
}

describe("a real database under load, with and without intermission", { timeout: 600_000 }, () => {
  let stack: DatabaseStack;
  before(async () => {
    stack = await DatabaseStack.start();
  });
  after(async () => stack?.stop());

  /** Without intermission: the same maintenance must fail requests. */
  async function without(t: TestContext, s: Scenario): Promise<void> {
    await stack.plain.newLogLines();
    try {
      const r = await runScenario(stack, s, { through: "plain", seconds: SECONDS, leadIn: LEAD_IN });
      const p = common(r);
      if (r.load.failed === 0) p.push("no request failed without intermission: this maintenance proves nothing");
      try {
        // nginx alone logs what the application's restart (M3) does to its connections:
        // refused, or reset by the stopping process while a request was on its way.
        await stack.plain.assertCleanLog([
          /connect\(\) failed \(111: Connection refused\) while connecting to upstream/,
          /recv\(\) failed \(104: Connection reset by peer\) while reading response header from upstream/,
          /upstream prematurely closed connection while reading response header from upstream/,
        ]);
      } catch (e) {
        p.push((e as Error).message.split("\n").slice(0, 6).join("\n"));
      }
      report(t, r, p);
    } finally {
      if (s.switchover) await stack.afterSwitchover();
    }
  }

  /** Inside `intermission run`: zero failed requests, no client timeouts, a clean error.log. */
  async function through(t: TestContext, s: Scenario, runArgs: string[] = [], expectedLog: RegExp[] = []): Promise<void> {
    await stack.front.newLogLines();
    try {
      const r = await runScenario(stack, s, { through: "intermission", seconds: SECONDS, leadIn: LEAD_IN, runArgs });
      const p = common(r);
      const by = Object.entries({ ...r.load.failedByStatus, ...r.load.errors }).map(([k, v]) => `${k}: ${v}`).join(", ");
      if (r.load.failed) p.push(`${r.load.failed} request(s) failed through intermission (${by})`);
      if (r.load.timeouts) p.push(`${r.load.timeouts} client timeout(s)`);
      const held = r.maintenance.endMs - r.maintenance.startMs;
      if (r.load.slowestMs > held + RELEASE_MARGIN_MS) {
        p.push(`the slowest request took ${r.load.slowestMs} ms, the maintenance ${Math.round(held)} ms`);
      }
      if (!/intermission: paused for/.test(r.maintenance.output)) p.push("intermission run did not pause and resume");
      try {
        await stack.front.assertCleanLog(expectedLog);
      } catch (e) {
        p.push((e as Error).message.split("\n").slice(0, 6).join("\n"));
      }
      report(t, r, p);
    } finally {
      if (s.switchover) await stack.afterSwitchover();
    }
  }

  describe(`M1: ${SCENARIOS.M1.title}`, () => {
    it("without intermission, requests fail", (t) => without(t, SCENARIOS.M1));
    it("inside intermission run, none fail and every write lands once", (t) => through(t, SCENARIOS.M1));
  });

  describe(`M2: ${SCENARIOS.M2.title}`, () => {
    it("without intermission, requests fail", (t) => without(t, SCENARIOS.M2));
    it("inside intermission run, none fail and every write lands once", (t) => through(t, SCENARIOS.M2));
  });

  describe(`M3: ${SCENARIOS.M3.title}`, () => {
    it("without intermission, requests fail", (t) => without(t, SCENARIOS.M3));
    // The script returns before the new process listens. `run --ready` waits for the
    // application's health check before it resumes (the CLI's documented option).
    it("inside intermission run --ready, none fail", (t) =>
      through(t, SCENARIOS.M3, ["--ready", `${stack.appUrl}/healthz`, "--ready-timeout", "20"]));
    // Without --ready, released requests reach a port nobody listens on yet: the engine
    // must hold again and retry a request whose upstream connection failed (the
    // application never saw it) instead of answering 502. nginx logs the refused connects.
    it("inside plain intermission run, requests the application never saw are retried, none fail", (t) =>
      through(t, SCENARIOS.M3, [], [/connect\(\) failed \(111: Connection refused\) while connecting to upstream/]));
  });

  describe(`M4: ${SCENARIOS.M4.title}`, () => {
    it("without intermission, requests fail", (t) => without(t, SCENARIOS.M4));
    it("inside intermission run, none fail and every write lands once", (t) => through(t, SCENARIOS.M4));
  });
});
