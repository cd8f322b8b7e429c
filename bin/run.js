// intermission run -- CMD: pause every node (all or nothing), wait for the drain, run
// CMD, and resume every node afterwards, whether CMD succeeds, fails or is interrupted.
import { spawn } from "node:child_process";
import { EXIT_NOT_DRAINED } from "./args.js";
import { fanOut } from "./nodes.js";
function pauseParams(o) {
    return { ttl: o.ttl, reason: o.reason ?? `intermission run ${o.argv.join(" ")}`.slice(0, 200), scope: o.scope, drain: o.drain };
}
async function resumeAll(o, urls, log) {
    const results = await fanOut(urls, "resume", "POST", { scope: o.scope }, o.token, o.timeout);
    for (const r of results) {
        if (r.ok) {
            const since = typeof r.body.previous === "string" ? r.body.previous : "?";
            log(`resumed ${r.url}: released ${r.body.released ?? 0} held request(s) (was ${since})`);
        }
        else {
            log(`FAILED to resume ${r.error}`);
        }
    }
    return results;
}
/** Runs CMD with its stdio, forwarding SIGINT/SIGTERM; resolves with its exit status. */
function runCommand(argv, log) {
    return new Promise((resolve) => {
        const child = spawn(argv[0], argv.slice(1), { stdio: "inherit" });
        const forward = (signal) => {
            log(`got ${signal}: passing it to the command, then resuming`);
            child.kill(signal);
        };
        process.on("SIGINT", forward);
        process.on("SIGTERM", forward);
        const done = (status) => {
            process.off("SIGINT", forward);
            process.off("SIGTERM", forward);
            resolve(status);
        };
        child.on("error", (e) => {
            log(`cannot run ${argv[0]}: ${e.message}`);
            done(127);
        });
        child.on("exit", (code, signal) => {
            if (signal) {
                const numbers = { SIGINT: 2, SIGTERM: 15, SIGKILL: 9, SIGHUP: 1 };
                done(128 + (numbers[signal] ?? 1));
            }
            else {
                done(code ?? 1);
            }
        });
    });
}
export async function run(o, log) {
    const started = Date.now();
    const drain = o.drain !== undefined ? Number(o.drain) : 0;
    const paused = await fanOut(o.urls, "pause", "POST", pauseParams(o), o.token, o.timeout + drain);
    const failed = paused.filter((r) => !r.ok);
    if (failed.length > 0) {
        for (const r of failed)
            log(`FAILED to pause ${r.error}`);
        const ok = paused.filter((r) => r.ok).map((r) => r.url);
        if (ok.length > 0) {
            log(`resuming the ${ok.length} node(s) that did pause; ${o.argv[0]} was not run`);
            await resumeAll(o, ok, log);
        }
        return 1;
    }
    for (const r of paused) {
        const drainNote = r.body.drained === undefined ? "" : r.body.drained
            ? ", drained" : `, NOT drained: ${r.body.in_flight} request(s) still in flight after ${drain}s`;
        log(`paused ${r.url}${drainNote}`);
    }
    // By default a drain that timed out is only reported (one WebSocket should not block
    // every maintenance); --require-drain makes it a reason not to start.
    const undrained = paused.filter((r) => r.body.drained !== true);
    if (o.requireDrain && undrained.length > 0) {
        log(`--require-drain: ${undrained.length} node(s) did not drain within ${drain}s; ` +
            `resuming every node; ${o.argv[0]} was not run`);
        await resumeAll(o, o.urls, log);
        return EXIT_NOT_DRAINED;
    }
    // From here on, every path resumes. A second signal while resuming is ignored.
    let status;
    try {
        status = await runCommand(o.argv, log);
    }
    finally {
        const ignore = () => log("resuming, please wait");
        process.on("SIGINT", ignore);
        process.on("SIGTERM", ignore);
        const resumed = await resumeAll(o, o.urls, log);
        process.off("SIGINT", ignore);
        process.off("SIGTERM", ignore);
        const held = resumed.reduce((n, r) => n + (r.ok ? Number(r.body.released ?? 0) : 0), 0);
        log(`paused for ${((Date.now() - started) / 1000).toFixed(1)}s; ${held} request(s) were held at resume`);
        if (resumed.some((r) => !r.ok)) {
            log("some nodes did not resume: they resume by themselves when their pause TTL ends");
            status = status === 0 ? 1 : status;
        }
    }
    return status;
}
