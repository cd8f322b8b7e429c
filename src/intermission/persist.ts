// The pauses in force, kept in a small file so that they outlive the shared dicts.
//
// A binary upgrade (USR2, then QUIT to the old master: Debian's `invoke-rc.d nginx
// upgrade`) starts a new master with new, empty shared dicts, while the old workers
// finish the requests they hold. Without this file the new master would say "running"
// in the middle of a maintenance, and the old workers' held requests would wait for a
// resume that only the new master hears. So:
//   - every change of a scope's mode on this node (pause, maintenance, resume; in fleet
//     mode the changes the sync applies from Redis too) rewrites the file from the state zone: the scopes
//     paused or in maintenance, with since, until and reason, and when it was written.
//     Written to a temporary name and renamed over the file (atomic on POSIX), from the
//     control path only, never the hot path;
//   - setup() in a master whose zones are new (a start, a restart, a binary upgrade; not
//     a reload, which keeps them) restores each pause still in force (until not passed),
//     except in fleet mode, where Redis holds the fleet's state and the sync brings it;
//   - a worker that holds requests (an old worker finishing after the upgrade, or any)
//     reads the file every FILE_LOOK_EVERY: a scope paused here that the file, written
//     after this pause began, no longer lists was resumed through the other master, so
//     it resumes here too and its held requests are released. In fleet mode this is how
//     the old workers, whose sync stops as they exit, hear the fleet's resume.
// The default path is nginx's compiled-in client body temp directory (Debian:
// /var/lib/nginx/body; OpenResty: <prefix>/client_body_temp): nginx creates it at start,
// owned by the worker user, so the workers can write there. setup({ state_file = ... })
// names another; false turns it off.
import * as cjson from "cjson.safe";
import { ScopeKeys, zones, num, keysFor, knownScopes, ensureScope } from "./shm";
import { settings } from "./settings";
import { modeOf, writeMode } from "./mode";
import * as release from "./release";
import * as waiters from "./waiters";

/** How often a worker that holds requests reads the file. */
const FILE_LOOK_EVERY = 0.5;
/**
 * A pause counts as resumed elsewhere only if the file was written this long after it
 * began: workers' cached clocks differ by milliseconds, and a file written just before a
 * pause made in this nginx must never end it.
 */
const CLOCK_MARGIN = 1;

interface Entry {
  scope: string;
  mode: "paused" | "maintenance";
  since: number;
  until: number;
  reason: string;
}

interface Saved {
  written: number;
  scopes: Entry[];
}

/** The file named by nginx's build: <client body temp path>/intermission.state. */
export function defaultPath(): string {
  const [ok, configure] = pcall(() => ngx.config.nginx_configure());
  let dir: string | undefined;
  if (ok && type(configure) === "string") {
    const [found] = string.match(configure as unknown as string, "%-%-http%-client%-body%-temp%-path=(%S+)");
    dir = found;
  }
  if (dir === undefined) dir = `${ngx.config.prefix()}client_body_temp`;
  return `${dir}/intermission.state`;
}

let resolved: string | undefined;

function path(): string | undefined {
  const p = settings.cfg.state_file;
  if (p === false) return undefined;
  if (p !== undefined) return p;
  if (resolved === undefined) resolved = defaultPath();
  return resolved;
}

let complained = false;

/** Rewrites the file from the state zone. Control path only. */
export function save(): void {
  const file = path();
  if (file === undefined) return;
  ngx.update_time();
  const scopes: Entry[] = [];
  for (const scope of knownScopes()) {
    const keys = keysFor(scope);
    const mode = modeOf(keys);
    if (mode === "paused" || mode === "maintenance") {
      const [reason] = zones.state.get(keys.reason);
      scopes.push({ scope, mode, since: num(zones.state, keys.since), until: num(zones.state, keys.until), reason: type(reason) === "string" ? (reason as string) : "" });
    }
  }
  const [text] = cjson.encode({ written: ngx.now(), scopes: scopes.length > 0 ? scopes : undefined });
  const tmp = `${file}.${ngx.worker.pid()}.tmp`;
  const [f, openErr] = io.open(tmp, "w");
  let err: string | undefined = f === undefined ? tostring(openErr) : undefined;
  if (f !== undefined) {
    const [wrote, writeErr] = f.write(text ?? "{}", "\n");
    f.close();
    if (wrote === undefined) err = writeErr;
    else {
      const [renamed, renameErr] = os.rename(tmp, file);
      if (renamed === undefined) err = renameErr;
    }
    if (err !== undefined) os.remove(tmp);
  }
  if (err !== undefined) {
    // Once per worker: the pause itself is in force; only an upgrade would lose it.
    if (!complained) ngx.log(ngx.ERR, `intermission: cannot keep the pause state in ${file} (a binary upgrade would end a pause; set setup({ state_file = ... }) to a path the workers can write, or false): ${err}`);
    complained = true;
  } else {
    complained = false;
  }
}

function load(file: string): Saved | undefined {
  const [f] = io.open(file, "r");
  if (f === undefined) return undefined;
  const text = f.read("*a");
  f.close();
  if (typeof text !== "string") return undefined;
  const [data] = cjson.decode(text);
  if (type(data) !== "table") return undefined;
  const d = data as { written?: unknown; scopes?: unknown };
  if (type(d.written) !== "number") return undefined;
  const scopes: Entry[] = [];
  if (type(d.scopes) === "table") {
    for (const e of d.scopes as Entry[]) {
      if (type(e) === "table" && type(e.scope) === "string" && (e.mode === "paused" || e.mode === "maintenance")
        && type(e.since) === "number" && type(e.until) === "number") {
        scopes.push({ scope: e.scope, mode: e.mode, since: e.since, until: e.until, reason: type(e.reason) === "string" ? e.reason : "" });
      }
    }
  }
  return { written: d.written as number, scopes };
}

/**
 * setup(), zones just created: puts back each pause and maintenance still in force.
 * Runs in the master before any worker exists, so no lock is needed.
 */
export function restore(): void {
  const file = path();
  if (file === undefined || settings.cfg.store === "redis") return;
  const saved = load(file);
  if (saved === undefined) return;
  const now = ngx.now();
  for (const e of saved.scopes) {
    if (e.until !== 0 && e.until <= now) continue;
    const keys = keysFor(e.scope);
    const [made, err] = ensureScope(keys, settings.cfg.max_scopes);
    if (!made) {
      ngx.log(ngx.ERR, `intermission: cannot restore the ${e.mode} of scope ${e.scope} from ${file}: ${err}`);
      continue;
    }
    const st = zones.state;
    st.safe_set(keys.since, e.since);
    st.safe_set(keys.until, e.until);
    st.safe_set(keys.reason, e.reason);
    writeMode(keys, modeOf(keys), e.mode);
    ngx.log(ngx.NOTICE, `intermission: audit action=restore scope=${e.scope} mode=${e.mode} until=${e.until} reason=${e.reason} from=${file}`);
  }
}

let lookedAt = 0;

/**
 * The watcher, while this worker holds requests: a scope stopped here that the file,
 * written well after its pause began, no longer lists was resumed through another
 * master (a binary upgrade): resume it here too.
 */
function lookOutside(this: void, scopes: ScopeKeys[]): void {
  const file = path();
  if (file === undefined) return;
  const now = ngx.now();
  if (now - lookedAt < FILE_LOOK_EVERY) return;
  lookedAt = now;
  const saved = load(file);
  if (saved === undefined) return;
  for (const keys of scopes) {
    const mode = modeOf(keys);
    if (mode !== "paused" && mode !== "maintenance") continue;
    if (saved.written < num(zones.state, keys.since) + CLOCK_MARGIN) continue;
    let listed = false;
    for (const e of saved.scopes) if (e.scope === keys.scope) listed = true;
    if (listed) continue;
    const [next] = release.withScopeLock(keys, (k) => release.resumeLocked(k, ngx.now()));
    if (next !== undefined) {
      ngx.log(ngx.NOTICE, `intermission: audit action=resume scope=${keys.scope} reason=state-file was=${mode} written=${saved.written}`);
      waiters.poke();
    }
  }
}

waiters.setLookOutside(lookOutside);
