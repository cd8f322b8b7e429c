// Command-line parsing for the intermission CLI, on Node's util.parseArgs.
// parseArgs runs non-strict and hands back tokens: the checks below turn each token
// into a message in the CLI's own words ("--ttl needs a value"), which strict mode's
// generic errors would not give.
import { parseArgs as tokenize } from "node:util";
const COMMANDS = ["status", "pause", "resume", "maintenance", "run", "check-config"];
export class UsageError extends Error {
}
/** run's drain when neither --drain nor --no-drain is given. */
export const DEFAULT_RUN_DRAIN = "10";
/** The exit status of a run stopped by --require-drain (EX_TEMPFAIL: try again later). */
export const EXIT_NOT_DRAINED = 75;
/**
 * The exit status of a run refused because its scope is in maintenance on some node
 * (EX_TEMPFAIL, as for --require-drain: nothing was paused or run, try again once the
 * maintenance is over). run's resume would end that maintenance, which is not run's.
 */
export const EXIT_IN_MAINTENANCE = 75;
/**
 * run --ready's wait when --ready-timeout is not given. A restart of a typical
 * application (a JVM, a Rails app loading its code) takes seconds to tens of seconds;
 * 60 s covers that with room, and leaves the other half of the default pause TTL
 * (pause_ttl, 120 s) for CMD itself.
 */
export const DEFAULT_READY_TIMEOUT = 60;
/** The exit status of a run whose --ready URL never answered 2xx (EX_UNAVAILABLE). */
export const EXIT_NOT_READY = 69;
export const USAGE = `usage: intermission [--url URL]... [--token T] [--json] [--timeout S] COMMAND
       intermission --help | --version

commands:
  status [--scope S] [--watch]              state, held, in flight and counters per node
  pause [--ttl S] [--reason R] [--scope S] [--drain S]
  resume [--scope S]                        release held requests in arrival order
  maintenance [--ttl S] [--reason R] [--scope S]
  run [--ttl S] [--reason R] [--scope S] [--drain S | --no-drain] [--require-drain]
      [--ready URL [--ready-timeout S]] -- CMD [ARGS...]
                 pause every node, wait for its in-flight requests (--drain, default
                 ${DEFAULT_RUN_DRAIN}s), run CMD, resume every node (even if CMD fails or is
                 interrupted), exit with CMD's status. A drain that times out is
                 reported and CMD runs anyway; with --require-drain every node is
                 resumed instead, CMD is not run, and the exit status is ${EXIT_NOT_DRAINED}.
                 --ready URL: after CMD, wait until URL answers 2xx (polled every
                 0.2s) before resuming; after --ready-timeout (default ${DEFAULT_READY_TIMEOUT}s)
                 resume anyway and exit ${EXIT_NOT_READY} (CMD's own failure status wins).
                 A scope in maintenance on any node (run's resume would end it):
                 nothing is paused, CMD is not run, exit ${EXIT_IN_MAINTENANCE}.
  check-config [--nginx PATH] [--prefix DIR] [FILE]
                 on the nginx host: run FILE's init_by_lua (setup() and its options)
                 in a throwaway nginx that serves nothing, the check nginx -t skips
                 (FILE: nginx's default configuration)

scope:
  --scope S      the scope to act on. Without it: the control location's own scope
                 ($intermission_scope, else $app_name), else "default", which is the
                 whole node: a pause of default holds every request on the node whose
                 own scope is not paused or in maintenance. --scope S narrows a pause
                 to the locations of scope S. Tables name the scope each node acted on;
                 run warns when a pause held nothing while other scopes saw traffic.

options:
  --url URL      a node's control location, e.g. http://10.0.0.5/_intermission
                 (repeat for every node; default $INTERMISSION_URL, comma-separated,
                 else http://127.0.0.1:8080/_intermission)
  --token T      bearer token (default $INTERMISSION_TOKEN)
  --json         machine-readable output
  --timeout S    seconds to wait for a node (default 10)
  -h, --help     this text
  -V, --version  the version`;
const OPTIONS = {
    url: { type: "string", multiple: true },
    token: { type: "string" },
    json: { type: "boolean" },
    timeout: { type: "string" },
    ttl: { type: "string" },
    reason: { type: "string" },
    scope: { type: "string" },
    drain: { type: "string" },
    "no-drain": { type: "boolean" },
    "require-drain": { type: "boolean" },
    ready: { type: "string" },
    "ready-timeout": { type: "string" },
    nginx: { type: "string" },
    prefix: { type: "string" },
    watch: { type: "boolean" },
    help: { type: "boolean", short: "h" },
    version: { type: "boolean", short: "V" },
};
const isName = (name) => Object.hasOwn(OPTIONS, name);
const trimUrl = (u) => u.trim().replace(/\/+$/, "");
export function parseArgs(argv, env) {
    const { tokens } = tokenize({ args: argv, options: OPTIONS, strict: false, allowPositionals: true, tokens: true });
    const strings = {};
    const flags = new Set();
    const urls = [];
    const positionals = [];
    let command;
    let cmdArgv = [];
    for (const t of tokens) {
        if (t.kind === "option-terminator") {
            cmdArgv = argv.slice(t.index + 1);
            break;
        }
        if (t.kind === "positional") {
            positionals.push(t.value);
            continue;
        }
        if (!isName(t.name))
            throw new UsageError(`unknown option ${t.rawName}`);
        if (OPTIONS[t.name].type === "boolean") {
            if (t.value !== undefined)
                throw new UsageError(`${t.rawName} takes no value`);
            flags.add(t.name);
            continue;
        }
        // A value that looks like the next option means the value was left out.
        if (t.value === undefined || (!t.inlineValue && t.value.startsWith("--")))
            throw new UsageError(`${t.rawName} needs a value`);
        if (t.name === "url")
            urls.push(trimUrl(t.value));
        else
            strings[t.name] = t.value;
    }
    if (flags.has("help"))
        return { kind: "help" };
    if (flags.has("version"))
        return { kind: "version" };
    let conf;
    for (const p of positionals) {
        if (command === "check-config" && conf === undefined) {
            conf = p;
            continue;
        }
        if (command !== undefined)
            throw new UsageError(`unexpected argument ${p}`);
        if (!COMMANDS.includes(p))
            throw new UsageError(`unknown command ${p}`);
        command = p;
    }
    if (command === undefined)
        throw new UsageError("no command given");
    let timeout = 10;
    if (strings.timeout !== undefined) {
        timeout = Number(strings.timeout);
        if (!(timeout > 0))
            throw new UsageError("--timeout takes a positive number of seconds");
    }
    let drain = strings.drain;
    const requireDrain = flags.has("require-drain");
    const ready = strings.ready?.trim();
    let readyTimeout = DEFAULT_READY_TIMEOUT;
    if (command === "run") {
        if (cmdArgv.length === 0)
            throw new UsageError("run needs a command after --");
        if (flags.has("no-drain") && drain !== undefined)
            throw new UsageError("--drain and --no-drain exclude each other");
        if (flags.has("no-drain") && requireDrain)
            throw new UsageError("--require-drain needs a drain: drop --no-drain");
        if (!flags.has("no-drain") && drain === undefined)
            drain = DEFAULT_RUN_DRAIN;
        if (ready === undefined && strings["ready-timeout"] !== undefined)
            throw new UsageError("--ready-timeout needs --ready URL");
        if (ready !== undefined && !(/^https?:\/\//.test(ready) && URL.canParse(ready))) {
            throw new UsageError(`--ready takes an http:// or https:// URL, got ${ready}`);
        }
        if (strings["ready-timeout"] !== undefined) {
            readyTimeout = Number(strings["ready-timeout"]);
            if (!(readyTimeout > 0 && readyTimeout < Infinity))
                throw new UsageError("--ready-timeout takes a positive number of seconds");
        }
    }
    else {
        if (cmdArgv.length > 0)
            throw new UsageError(`${command} takes no command after --`);
        if (requireDrain)
            throw new UsageError("--require-drain goes with run");
        if (flags.has("no-drain"))
            throw new UsageError("--no-drain goes with run");
        if (ready !== undefined)
            throw new UsageError("--ready goes with run");
        if (strings["ready-timeout"] !== undefined)
            throw new UsageError("--ready-timeout goes with run");
    }
    if (flags.has("watch") && command !== "status")
        throw new UsageError("--watch goes with status");
    if (urls.length === 0) {
        const fromEnv = (env.INTERMISSION_URL ?? "").split(",").map(trimUrl).filter(Boolean);
        urls.push(...(fromEnv.length > 0 ? fromEnv : ["http://127.0.0.1:8080/_intermission"]));
    }
    for (const u of urls) {
        if (!/^https?:\/\//.test(u))
            throw new UsageError(`--url must start with http:// or https://, got ${u}`);
    }
    return {
        kind: "command",
        command,
        urls,
        token: strings.token ?? env.INTERMISSION_TOKEN,
        json: flags.has("json"),
        timeout,
        ttl: strings.ttl,
        reason: strings.reason,
        scope: strings.scope,
        drain,
        requireDrain,
        ready,
        readyTimeout,
        watch: flags.has("watch"),
        argv: cmdArgv,
        nginx: strings.nginx ?? "nginx",
        conf,
        prefix: strings.prefix,
    };
}
