// intermission run -- CMD: pause every node (all or nothing), wait for the drain, run
// CMD, wait for --ready, and resume every node afterwards, whether CMD succeeds, fails or
// is interrupted.
import { spawn } from "node:child_process";
import { constants } from "node:os";
import { EXIT_IN_MAINTENANCE, EXIT_NOT_DRAINED, EXIT_NOT_READY } from "./args.js";
import { fanOut } from "./nodes.js";
import { waitUntilReady } from "./ready.js";
import { scopeLabel } from "./format.js";
function pauseParams(o) {
    return { ttl: o.ttl, reason: o.reason ?? `intermission run ${o.argv.join(" ")}`.slice(0, 200), scope: o.scope, drain: o.drain };
}
/**
 * How long a resume is retried on nodes whose fleet Redis did not take it (503 "not
 * applied" or "unknown"): a pause whose outcome was unknown may land late, and only a
 * resume through that node is sure to come after it.
 */
const RESUME_RETRY_S = 30;
const redisTrouble = (r) => !r.ok && r.applied !== undefined;
async function resumeAll(o, urls, log) {
    const params = { scope: o.scope };
    const results = await fanOut(urls, "resume", "POST", params, o.token, o.timeout);
    const deadline = Date.now() + RESUME_RETRY_S * 1000;
    while (results.some(redisTrouble) && Date.now() < deadline) {
        const again = results.filter(redisTrouble);
        for (const r of again)
            log(`resume not confirmed ${r.error}; retrying`);
        await new Promise((resolve) => setTimeout(resolve, 1000));
        const next = await fanOut(again.map((r) => r.url), "resume", "POST", params, o.token, o.timeout);
        for (const r of next)
            results[results.findIndex((x) => x.url === r.url)] = r;
    }
    for (const r of results) {
        if (r.ok) {
            const since = typeof r.body.previous === "string" ? r.body.previous : "?";
            log(`resumed ${r.url}: released ${r.body.released ?? 0} held request(s) (was ${since}); scope ${scopeLabel(r.body)}`);
        }
        else {
            log(`FAILED to resume ${r.error}`);
        }
    }
    return results;
}
/** The status answers' passed_unheld: per scope, requests passed unheld while another scope was stopped. */
function unheldCounts(body) {
    const out = {};
    const raw = body?.passed_unheld;
    if (raw !== null && typeof raw === "object") {
        for (const [scope, n] of Object.entries(raw))
            if (typeof n === "number")
                out[scope] = n;
    }
    return out;
}
/**
 * A pause that held nothing while requests of other scopes passed the node unheld named
 * the wrong scope: say so, naming both, rather than let the run look like a success.
 */
function warnIfHeldNothing(paused, resumed, log) {
    for (const p of paused) {
        const r = resumed.find((x) => x.url === p.url);
        if (!r?.ok || Number(r.body.released ?? 0) !== 0 || Number(r.body.counters?.held ?? 0) > Number(p.body.counters?.held ?? 0))
            continue;
        const before = unheldCounts(p.body);
        const after = unheldCounts(r.body);
        const scope = String(p.body.scope);
        const passed = Object.entries(after)
            .map(([s, n]) => [s, n - (before[s] ?? 0)])
            .filter(([s, n]) => n > 0 && s !== scope)
            .sort(([a], [b]) => (a < b ? -1 : 1));
        if (passed.length === 0)
            continue;
        const list = passed.map(([s, n]) => `${s} (${n})`).join(", ");
        const names = passed.map(([s]) => s);
        const hint = scope === "default"
            ? "this node does not apply a pause of default to every scope (an older intermission?)"
            : `run with --scope ${names[0]}, or without --scope to pause the whole node (scope default) from a control location that sets no scope`;
        log(`WARNING: ${p.url}: the pause of scope ${scope} held nothing, while ` +
            `${passed.reduce((n, [, k]) => n + k, 0)} request(s) of scope(s) ${list} passed unheld: ${hint}`);
    }
}
/** 128 + the signal's number on this platform, as a shell reports a command killed by it. */
const exitStatusOf = (signal) => 128 + (constants.signals[signal] ?? 0);
/** The signals run catches: an interrupt, a kill, and a hangup (an ssh session that drops). */
const CAUGHT = ["SIGINT", "SIGTERM", "SIGHUP"];
/**
 * SIGINT/SIGTERM/SIGHUP for the whole run, so that none leaves a node paused: before CMD starts
 * one cancels it (the nodes are resumed and CMD never runs), while CMD runs it is passed
 * to CMD, while waiting for --ready it ends the wait (and one during CMD skips it), and
 * while resuming it is ignored.
 */
class Signals {
    log;
    cmd;
    /** The first SIGINT/SIGTERM/SIGHUP of the run, before resuming. */
    caught;
    /** Aborted by that signal: cuts the wait for --ready short. */
    interrupt = new AbortController();
    interrupted = this.interrupt.signal;
    child;
    waitingFor;
    resuming = false;
    constructor(log, cmd) {
        this.log = log;
        this.cmd = cmd;
        for (const signal of CAUGHT)
            process.on(signal, this.handle);
    }
    handle = (signal) => {
        if (this.resuming) {
            this.log("resuming, please wait");
            return;
        }
        if (this.child) {
            this.log(`got ${signal}: passing it to the command, then resuming`);
            this.child.kill(signal);
        }
        else if (this.waitingFor !== undefined) {
            if (!this.interrupted.aborted)
                this.log(`got ${signal}: no longer waiting for ${this.waitingFor}; resuming`);
        }
        else if (this.caught === undefined) {
            this.log(`got ${signal}: ${this.cmd} will not run; resuming`);
        }
        this.caught ??= signal;
        this.interrupt.abort();
    };
    running(child) {
        this.child = child;
    }
    waiting(url) {
        this.waitingFor = url;
    }
    startResuming() {
        this.resuming = true;
    }
    dispose() {
        for (const signal of CAUGHT)
            process.off(signal, this.handle);
    }
}
/** Runs CMD with its stdio; resolves with its exit status (128+signal if killed). */
function runCommand(argv, log, signals) {
    return new Promise((resolve) => {
        const child = spawn(argv[0], argv.slice(1), { stdio: "inherit" });
        signals.running(child);
        const done = (status) => {
            signals.running(undefined);
            resolve(status);
        };
        child.on("error", (e) => {
            log(`cannot run ${argv[0]}: ${e.message}`);
            done(127);
        });
        child.on("exit", (code, signal) => done(signal ? exitStatusOf(signal) : code ?? 1));
    });
}
/**
 * After CMD (whatever its status: a restart that reported failure may still come up),
 * holds the pause until `url` answers 2xx. Returns the run's status: CMD's when it
 * failed, else EXIT_NOT_READY on a timeout, 128+signal when interrupted.
 */
async function waitForReady(o, url, cmdStatus, log, signals) {
    if (signals.caught) {
        log(`interrupted: not waiting for ${url}; resuming`);
        return cmdStatus;
    }
    log(`waiting up to ${o.readyTimeout}s for ${url} to answer 2xx before resuming`);
    signals.waiting(url);
    const r = await waitUntilReady(url, o.readyTimeout, signals.interrupted, log);
    signals.waiting(undefined);
    const waited = `${r.waitedS.toFixed(1)}s`;
    if (r.ready) {
        log(`ready: ${url} ${r.last} after ${waited} (${r.attempts} attempt(s))`);
        return cmdStatus;
    }
    if (r.interrupted) {
        log(`waited ${waited} for ${url}, then interrupted`);
        return cmdStatus !== 0 ? cmdStatus : exitStatusOf(signals.caught ?? "SIGINT");
    }
    log(`NOT READY: ${url} did not answer 2xx within ${o.readyTimeout}s (last: ${r.last}); ` +
        `resuming anyway` + (cmdStatus !== 0 ? "" : `, exit status ${EXIT_NOT_READY}`));
    return cmdStatus !== 0 ? cmdStatus : EXIT_NOT_READY;
}
export async function run(o, log) {
    const signals = new Signals(log, o.argv[0]);
    try {
        return await pauseRunResume(o, log, signals);
    }
    finally {
        signals.dispose();
    }
}
/**
 * The nodes where the scope run would pause is in someone else's maintenance: run's pause
 * would turn it into a pause and its resume would end it, letting visitors reach the
 * application mid-maintenance. The whole node's maintenance (scope default) counts for a
 * run of another scope too: that scope's resume would send the requests it held to the
 * application while the node is in maintenance. A node that does not answer is not
 * counted here: its pause fails (or is resumed) as any other.
 */
async function inMaintenance(o, log) {
    const checked = await fanOut(o.urls, "status", "GET", { scope: o.scope }, o.token, o.timeout);
    const found = [];
    for (const r of checked) {
        if (!r.ok)
            continue;
        const b = r.body;
        if (b.state === "maintenance") {
            const until = typeof b.until === "number" && b.until > 0
                ? `until ${new Date(b.until * 1000).toISOString().replace(/\.\d+Z$/, "Z")}` : "until resumed";
            const reason = typeof b.reason === "string" && b.reason !== "" ? `"${b.reason}"` : "no reason given";
            log(`REFUSED: ${r.url}: scope ${scopeLabel(b)} is in maintenance (${reason}, ${until}); ` +
                `run would end it with its resume`);
        }
        else if (b.applies_to === "scope" && b.node_state === "maintenance") {
            log(`REFUSED: ${r.url}: the whole node (scope default) is in maintenance; run's resume of ` +
                `scope ${b.scope} would send the requests it held to the application during it`);
        }
        else {
            continue;
        }
        found.push(r);
    }
    return found;
}
async function pauseRunResume(o, log, signals) {
    const started = Date.now();
    const maintained = await inMaintenance(o, log);
    if (maintained.length > 0) {
        log(`${o.argv[0]} was not run; no node was paused: ${maintained.length} node(s) in maintenance ` +
            `(${maintained.map((r) => r.url).join(", ")}); run it once the maintenance is over`);
        return EXIT_IN_MAINTENANCE;
    }
    if (signals.caught) {
        log(`no node was paused`);
        return exitStatusOf(signals.caught);
    }
    const drain = o.drain !== undefined ? Number(o.drain) : 0;
    const paused = await fanOut(o.urls, "pause", "POST", pauseParams(o), o.token, o.timeout + drain);
    const failed = paused.filter((r) => !r.ok);
    if (failed.length > 0) {
        for (const r of failed)
            log(`FAILED to pause ${r.error}`);
        // A pause whose outcome is unknown may still land: those nodes are resumed too.
        const unknown = failed.filter((r) => r.applied === "unknown");
        const toResume = paused.filter((r) => r.ok || r.applied === "unknown").map((r) => r.url);
        if (toResume.length > 0) {
            log(`resuming the ${toResume.length} node(s) that did pause` +
                (unknown.length > 0 ? ` or may have (${unknown.length} of unknown outcome)` : "") + `; ${o.argv[0]} was not run`);
            signals.startResuming();
            const resumed = await resumeAll(o, toResume, log);
            if (resumed.some((r) => !r.ok)) {
                log("NOT every node is known to be running: a pause that took effect ends with its TTL; " +
                    "check with `intermission status` and resume");
            }
        }
        else {
            log(`${o.argv[0]} was not run; no node was paused`);
        }
        return 1;
    }
    for (const r of paused) {
        const drainNote = r.body.drained === undefined ? "" : r.body.drained
            ? ", drained" : `, NOT drained: ${r.body.in_flight} request(s) still in flight after ${drain}s`;
        log(`paused ${r.url}${drainNote}; scope ${scopeLabel(r.body)}`);
    }
    // From here on, every path resumes every node.
    let status;
    try {
        // By default a drain that timed out is only reported (one WebSocket should not block
        // every maintenance); --require-drain makes it a reason not to start.
        const undrained = paused.filter((r) => r.body.drained !== true);
        if (signals.caught) {
            status = exitStatusOf(signals.caught);
        }
        else if (o.requireDrain && undrained.length > 0) {
            log(`--require-drain: ${undrained.length} node(s) did not drain within ${drain}s; ` +
                `resuming every node; ${o.argv[0]} was not run`);
            status = EXIT_NOT_DRAINED;
        }
        else {
            status = await runCommand(o.argv, log, signals);
            if (o.ready !== undefined)
                status = await waitForReady(o, o.ready, status, log, signals);
        }
    }
    finally {
        signals.startResuming();
        const resumed = await resumeAll(o, o.urls, log);
        const held = resumed.reduce((n, r) => n + (r.ok ? Number(r.body.released ?? 0) : 0), 0);
        log(`paused for ${((Date.now() - started) / 1000).toFixed(1)}s; ${held} request(s) were held at resume`);
        warnIfHeldNothing(paused, resumed, log);
        if (resumed.some((r) => !r.ok)) {
            log("some nodes did not resume: they resume by themselves when their pause TTL ends");
            status = status === 0 ? 1 : status;
        }
    }
    return status;
}
