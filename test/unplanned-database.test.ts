// Unplanned outages on the real database stack (issue 22, "Done when"): nobody pauses,
// nobody runs `intermission run`; ~300 req/s from 16 connections as test/database.test.ts
// sends, each outage once without the option and once with it:
//   U1 the application restarted systemctl-style (returns once the new process is spawned)
//   U2 the application SIGKILLed, its supervisor starting it again 1 s later
//   U3 pg_ctl restart -m fast, the application answering "not applied" (the README's
//      middleware, examples/not-applied.mjs) when it has no database connection
// "Without" for U1 and U2 is the same intermission front with outage_hold = 0; for U3 it is
// the application's route without the middleware (its 500s must pass through unchanged).
// "With" is the sample nginx.conf's front, outage_hold at its default (10 s).
// Every request's id is written by the application; the rows must be exactly the 200s.
import { describe, it, before, after, TestContext } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { DatabaseStack } from "./harness/database.ts";
import { ALARMING, NginxNode } from "./harness/node.ts";
import { waitFor } from "./harness/http.ts";
import { common, describeRun, RunResult, runScenario, Scenario, SCENARIOS, Through } from "./harness/scenarios.ts";

const SECONDS = 10;
const LEAD_IN = 3;
/** The sample's scope ($app_name demo). */
const SCOPE = "demo";
/**
 * nginx's own lines for a request's failed connect (the outage's first requests): refused,
 * or reset (the killed application's port had completed the handshake, in its backlog).
 */
const CONNECT = /connect\(\) failed \((111: Connection refused|104: Connection reset by peer)\) while connecting to upstream/;
/** nginx's own lines for requests the killed application had taken (U2, and without the option). */
const IN_FLIGHT = [
  /recv\(\) failed \(104: Connection reset by peer\) while reading response header from upstream/,
  /upstream prematurely closed connection while reading response header from upstream/,
];

function report(t: TestContext, r: RunResult, problems: string[]): void {
  t.diagnostic(describeRun(r));
  assert.deepEqual(problems, [], `${describeRun(r)}\n${problems.join("\n")}`);
}

/** The ids of the requests nginx logged as written into a connection the application closed or reset. */
function writtenIntoClosed(log: string[]): Set<string> {
  return new Set(log.filter((l) => IN_FLIGHT.some((re) => re.test(l))).map((l) => /[?&]id=([^ &"]+)/.exec(l)?.[1]).filter((id): id is string => !!id));
}

const failedBy = (r: RunResult) => Object.entries({ ...r.load.failedByStatus, ...r.load.errors }).map(([k, v]) => `${k}: ${v}`).join(", ");

/**
 * The requests in flight when the application was killed (U2), as the load generator saw
 * them: started before the kill and ended after it. The script says between which two
 * times (a `date` before and after the `kill`, in the container) it sent the signal.
 */
export function inFlightAtKill(r: RunResult): RunResult["samples"] {
  assert.ok(r.kill !== undefined, `the kill's time is not in the script's output: ${r.maintenance.output}`);
  return r.samples.filter((x) => x.start < r.kill!.toMs && x.end > r.kill!.fromMs);
}

describe("unplanned outages on a real database under load, nobody pausing, without and with outage_hold", { timeout: 900_000 }, () => {
  let stack: DatabaseStack;
  before(async () => {
    stack = await DatabaseStack.start({ nohold: true });
  });
  after(async () => stack?.stop());

  /** The application's lines about /write-na requests that failed after BEGIN (the last run's). */
  let appSaid: string[] = [];
  /** The front's log lines about the requests that failed (a diagnosis). */
  async function frontSaid(r: RunResult): Promise<string[]> {
    const failed = r.samples.filter((x) => x.status !== 200).map((x) => `id=${x.id} `);
    return (await stack.front.errorLog()).split("\n").filter((l) => failed.some((id) => l.includes(id))).slice(-12);
  }
  const node = (through: Through): NginxNode => ({ intermission: stack.front, plain: stack.plain, nohold: stack.nohold! })[through];

  /** held + retried = released + timed_out + aborted + maintenance + held now, once nothing is held and the outage is over. */
  async function balanced(n: NginxNode): Promise<string | undefined> {
    try {
      await waitFor("the scope running, nothing held", async () => {
        const s = await n.status(SCOPE);
        return s.state === "running" && s.held === 0;
      }, 20_000);
    } catch (e) {
      return `${(e as Error).message}: ${JSON.stringify(await n.status(SCOPE))}`;
    }
    const c = (await n.status(SCOPE)).counters;
    return c.held + c.retried === c.released + c.timed_out + c.aborted + c.maintenance ? undefined : `counters do not balance: ${JSON.stringify(c)}`;
  }

  /**
   * One run, nobody pausing; `check` adds the run's own verdicts. error.log may hold
   * nginx's own upstream failures (`expected`), nothing else at [error] or above.
   */
  async function once(t: TestContext, s: Scenario, through: Through, path: string, expected: RegExp[],
    check: (r: RunResult, counters: { before: any; after: any }, log: string[]) => string[] | Promise<string[]>): Promise<void> {
    const n = node(through);
    await n.newLogLines();
    const before = (await n.status(SCOPE)).counters;
    const r = await runScenario(stack, s, { through, seconds: SECONDS, leadIn: LEAD_IN, path });
    const { stdout, stderr } = await promisify(execFile)("docker", ["logs", "--since", "30s", stack.env().APP]);
    appSaid = `${stdout}${stderr}`.split("\n").filter((l) => /failed after BEGIN/.test(l));
    // A killed application may have committed a request it never answered (U2): its row
    // is there, its answer is nginx's 502. Only those in flight at the kill are excused.
    const p = common(r, r.kill === undefined ? new Set() : new Set(inFlightAtKill(r).filter((x) => x.status !== 200).map((x) => x.id)));
    const unbalanced = await balanced(n);
    if (unbalanced) p.push(unbalanced);
    const log = await n.newLogLines();
    const bad = log.filter((l) => ALARMING.test(l) && !expected.some((re) => re.test(l)));
    if (bad.length) p.push(`unexpected lines in error.log:\n${bad.slice(0, 5).join("\n")}`);
    p.push(...await check(r, { before, after: (await n.status(SCOPE)).counters }, log));
    report(t, r, p);
  }

  describe(`U1: ${SCENARIOS.U1.title}`, () => {
    it("with outage_hold = 0, requests fail", (t) => once(t, SCENARIOS.U1, "nohold", "/write", [CONNECT, ...IN_FLIGHT], (r) =>
      r.load.failed > 0 ? [] : ["no request failed with outage_hold = 0: this restart proves nothing"]));
    // The stopping process closes its idle keep-alive connections; a request nginx writes
    // into one at that moment may have been read (nginx cannot tell), so it is not sent
    // again: nginx logs it ("prematurely closed", "reset"). Only those may fail.
    it("with outage_hold (the default), none fail but a request written into a connection the stopping application closed, and the rows are the 200s", (t) =>
      once(t, SCENARIOS.U1, "intermission", "/write", [CONNECT, ...IN_FLIGHT], (r, c, log) => {
        const closed = writtenIntoClosed(log);
        const others = r.samples.filter((x) => x.status !== 200 && !closed.has(x.id));
        if (r.load.failed) t.diagnostic(`${r.load.failed} failed, ${closed.size} written into a connection the application closed`);
        return [
          ...(others.length ? [`${others.length} request(s) failed (${failedBy(r)}), not written into a closed connection: ${JSON.stringify(others.slice(0, 3))}`] : []),
          ...(r.load.timeouts ? [`${r.load.timeouts} client timeout(s)`] : []),
          ...(c.after.outages > c.before.outages ? [] : ["no outage was held: the restart did not reach intermission"]),
        ];
      }));
  });

  describe(`U2: ${SCENARIOS.U2.title}`, () => {
    it("with outage_hold = 0, requests fail", (t) => once(t, SCENARIOS.U2, "nohold", "/write", [CONNECT, ...IN_FLIGHT], (r) =>
      r.load.failed > inFlightAtKill(r).length ? [] : [`${r.load.failed} failed, not more than the ${inFlightAtKill(r).length} in flight at the kill: this crash proves nothing`]));
    // The issue's bound is "at most the requests in flight at the kill". nginx also fails
    // a request it wrote into a keep-alive connection of the dead process before it saw
    // the connection closed: bytes were sent, so intermission does not send it again (the
    // README's "Not held": nginx cannot tell whether the application read it). Those are
    // counted with the requests in flight, by id, from nginx's own lines.
    it("with outage_hold, only requests the application had (in flight at the kill, or written into its connections) fail, and nothing is applied twice", (t) =>
      once(t, SCENARIOS.U2, "intermission", "/write", [CONNECT, ...IN_FLIGHT], async (r, c, log) => {
        const inFlight = inFlightAtKill(r);
        const closed = writtenIntoClosed(log);
        const had = new Set([...inFlight.map((x) => x.id), ...closed]);
        const failed = r.samples.filter((x) => x.status !== 200);
        const others = failed.filter((x) => !had.has(x.id));
        const intoClosedOnly = failed.filter((x) => closed.has(x.id) && !inFlight.some((y) => y.id === x.id)).length;
        t.diagnostic(`${inFlight.length} request(s) in flight at the kill (sent within ${Math.round(r.kill!.toMs - r.kill!.fromMs)} ms), ` +
          `${r.load.failed} failed, of which ${intoClosedOnly} written into a connection of the dead process after the kill`);
        return [
          ...(r.load.failed > had.size ? [`${r.load.failed} failed, more than the ${had.size} the application had`] : []),
          ...(others.length ? [`${others.length} failed request(s) were neither in flight at the kill (${Math.round(r.kill!.fromMs)} to ${Math.round(r.kill!.toMs)} ms) nor written into a connection it closed: ${JSON.stringify(others.slice(0, 3))}`] : []),
          ...(r.load.timeouts ? [`${r.load.timeouts} client timeout(s)`] : []),
          ...(c.after.outages > c.before.outages ? [] : ["no outage was held: the crash did not reach intermission"]),
          ...(others.length ? [`nginx said: ${(await frontSaid(r)).slice(0, 6).join("\n")}`] : []),
        ];
      }));
  });

  describe(`U3: ${SCENARIOS.U3.title}`, () => {
    it("without the \"not applied\" middleware, the application's 500s pass through unchanged", (t) =>
      once(t, SCENARIOS.U3, "intermission", "/write", [], (r, c) => [
        ...(r.load.failed > 0 ? [] : ["no request failed without the middleware: this restart proves nothing"]),
        ...(Object.keys(r.load.failedByStatus).every((k) => k === "500") && Object.keys(r.load.errors).length === 0
          ? [] : [`failures other than the application's 500: ${failedBy(r)}`]),
        ...(c.after.retried === c.before.retried && c.after.outages === c.before.outages ? [] : ["a 500 was held or sent again"]),
      ]));
    it("with the middleware (X-Accel-Redirect: @intermission_retry), none fail and the rows are the 200s", (t) =>
      once(t, SCENARIOS.U3, "intermission", "/write-na", [], async (r, c) => [
        ...(r.load.failed ? [`the application says of the failed requests: ${appSaid.filter((l) => r.samples.some((x) => x.status !== 200 && l.includes(`${x.id} `))).slice(0, 5).join("\n") || "(nothing)"}`, ...(await frontSaid(r))] : []),
        ...(r.load.failed ? [`${r.load.failed} request(s) failed (${failedBy(r)})`] : []),
        ...(r.load.timeouts ? [`${r.load.timeouts} client timeout(s)`] : []),
        ...(c.after.retried > c.before.retried ? [] : ["no request was answered \"not applied\": the restart did not reach intermission"]),
      ]));
  });
});
