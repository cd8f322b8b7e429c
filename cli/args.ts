// Command-line parsing for the intermission CLI. No dependencies: the flags are few.

export type Command = "status" | "pause" | "resume" | "maintenance" | "run";
const COMMANDS: Command[] = ["status", "pause", "resume", "maintenance", "run"];

export interface Options {
  command: Command;
  urls: string[];
  token?: string;
  json: boolean;
  /** Seconds to wait for each node's answer (drain time is added for pause). */
  timeout: number;
  ttl?: string;
  reason?: string;
  scope?: string;
  /** Seconds; undefined = no drain. */
  drain?: string;
  watch: boolean;
  /** run: the command and its arguments. */
  argv: string[];
}

export class UsageError extends Error {}

export const USAGE = `usage: intermission [--url URL]... [--token T] [--json] [--timeout S] COMMAND

commands:
  status [--scope S] [--watch]              state, held, in flight and counters per node
  pause [--ttl S] [--reason R] [--scope S] [--drain S]
  resume [--scope S]                        release held requests in arrival order
  maintenance [--ttl S] [--reason R] [--scope S]
  run [--ttl S] [--reason R] [--scope S] [--drain S | --no-drain] -- CMD [ARGS...]
                                            pause every node, run CMD, resume every node
                                            (even if CMD fails or is interrupted), exit
                                            with CMD's status

options:
  --url URL      a node's control location, e.g. http://10.0.0.5/_intermission
                 (repeat for every node; default $INTERMISSION_URL, comma-separated,
                 else http://127.0.0.1:8080/_intermission)
  --token T      bearer token (default $INTERMISSION_TOKEN)
  --json         machine-readable output
  --timeout S    seconds to wait for a node (default 10)`;

/** run's drain when neither --drain nor --no-drain is given. */
export const DEFAULT_RUN_DRAIN = "10";

export function parseArgs(argv: string[], env: NodeJS.ProcessEnv): Options {
  const urls: string[] = [];
  let command: Command | undefined;
  const o: Partial<Options> = { json: false, watch: false, timeout: 10, argv: [] };
  let noDrain = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined || v.startsWith("--")) throw new UsageError(`${arg} needs a value`);
      return v;
    };
    if (arg === "--") {
      o.argv = argv.slice(i + 1);
      break;
    }
    switch (arg) {
      case "--url": urls.push(value().replace(/\/+$/, "")); break;
      case "--token": o.token = value(); break;
      case "--json": o.json = true; break;
      case "--timeout": {
        const t = Number(value());
        if (!(t > 0)) throw new UsageError("--timeout takes a positive number of seconds");
        o.timeout = t;
        break;
      }
      case "--ttl": o.ttl = value(); break;
      case "--reason": o.reason = value(); break;
      case "--scope": o.scope = value(); break;
      case "--drain": o.drain = value(); break;
      case "--no-drain": noDrain = true; break;
      case "--watch": o.watch = true; break;
      case "-h": case "--help": throw new UsageError("");
      default:
        if (arg.startsWith("-")) throw new UsageError(`unknown option ${arg}`);
        if (command !== undefined) throw new UsageError(`unexpected argument ${arg}`);
        if (!COMMANDS.includes(arg as Command)) throw new UsageError(`unknown command ${arg}`);
        command = arg as Command;
    }
  }
  if (command === undefined) throw new UsageError("no command given");
  if (command === "run") {
    if (o.argv!.length === 0) throw new UsageError("run needs a command after --");
    if (noDrain && o.drain !== undefined) throw new UsageError("--drain and --no-drain exclude each other");
    if (!noDrain && o.drain === undefined) o.drain = DEFAULT_RUN_DRAIN;
  } else if (o.argv!.length > 0) {
    throw new UsageError(`${command} takes no command after --`);
  }
  if (o.watch && command !== "status") throw new UsageError("--watch goes with status");
  if (urls.length === 0) {
    const fromEnv = (env.INTERMISSION_URL ?? "").split(",").map((u) => u.trim().replace(/\/+$/, "")).filter(Boolean);
    urls.push(...(fromEnv.length > 0 ? fromEnv : ["http://127.0.0.1:8080/_intermission"]));
  }
  for (const u of urls) {
    if (!/^https?:\/\//.test(u)) throw new UsageError(`--url must start with http:// or https://, got ${u}`);
  }
  return { ...(o as Options), command, urls, token: o.token ?? env.INTERMISSION_TOKEN };
}
