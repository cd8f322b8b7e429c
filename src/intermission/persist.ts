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
//     the old workers, whose sync stops as they exit, hear the fleet's resume. A scope the
//     file lists with a later until (a refresh) or in maintenance where it is paused here
//     takes that on (with the file's reason): only ever later or stricter, so a file
//     that lags a change made in this nginx (written a moment after the zone) never undoes
//     it. A pause whose until passes here asks the file first (expiryCheck): an old
//     worker never auto-resumes on its stale until while the file says the pause goes on;
//   - a failed write removes the file (a file that lists a resumed pause would bring it
//     back at the next start): the control answer says so in state_file_error;
//   - what is restored or taken on is only what the control API could have made
//     (validEntry): valid scope names, finite times, a reason of at most MAX_REASON bytes.
// The default path is nginx's compiled-in client body temp directory (Debian:
// /var/lib/nginx/body; OpenResty: <prefix>/client_body_temp): nginx creates it at start,
// owned by the worker user, so the workers can write there. setup({ state_file = ... })
// names another; false turns it off.
import * as cjson from "cjson.safe";
import { ScopeKeys, zones, num, keysFor, knownScopes } from "./shm";
import { createLocked } from "./reclaim";
import { settings } from "./settings";
import { modeOf, writeMode } from "./mode";
import * as release from "./release";
import * as waiters from "./waiters";
import { validScope, MAX_TTL, MAX_REASON } from "./params";
import { logOnce } from "./burst";

/** How often a worker that holds requests reads the file. */
const FILE_LOOK_EVERY = 0.5;
/**
 * A pause counts as resumed elsewhere only if the file was written this long after it
 * began: a file written just before a pause made in this nginx (another worker's save that
 * read the zone before the pause and renamed after it) must never end it. Both stamps come
 * from this host's clock; `since` is the pausing worker's cached time, at most the length
 * of one event-loop turn behind, and `written` is read fresh before the zone is read: a
 * tenth of a second covers that, and a resume made sooner than that after its pause is
 * the only change not passed on.
 */
const CLOCK_MARGIN = 0.1;

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

/** nginx's compiled-in client body temp directory: the default file is <it>/intermission.state. */
function defaultDir(): string {
  const [ok, configure] = pcall(() => ngx.config.nginx_configure());
  if (ok && type(configure) === "string") {
    const [found] = string.match(configure as unknown as string, "%-%-http%-client%-body%-temp%-path=(%S+)");
    if (found !== undefined) return found;
  }
  return `${ngx.config.prefix()}client_body_temp`;
}

/** Whether `dir` exists (a directory opens for reading; its reads are what fail). */
function dirExists(dir: string): boolean {
  const [f] = io.open(dir, "r");
  if (f === undefined) return false;
  f.close();
  return true;
}

/** The default file, or false when its directory is missing; looked up once per process. */
let resolved: string | false | undefined;

function path(): string | undefined {
  const p = settings.cfg.state_file;
  if (p === false) return undefined;
  if (p !== undefined) return p;
  if (resolved === undefined) {
    // nginx creates its compiled-in directory only if some location uses it: with
    // client_body_temp_path set in the http block it may never exist. Then there is no
    // state file, said once, instead of an [error] at every pause and resume.
    const dir = defaultDir();
    resolved = dirExists(dir) ? `${dir}/intermission.state` : false;
    if (resolved === false) {
      ngx.log(ngx.WARN, `intermission: no state file: ${dir} (nginx's default client_body_temp_path) does not exist, so pauses are not kept across a restart or binary upgrade; set setup({ state_file = "/a/path/the/workers/can/write" }), or state_file = false to silence this`);
    }
  }
  return resolved === false ? undefined : resolved;
}

/** Writes `text` to `file` in place (not atomic): the fallback when no temporary file can be made next to it. */
function writeInPlace(file: string, text: string): string | undefined {
  const [f, openErr] = io.open(file, "w");
  if (f === undefined) return tostring(openErr);
  const [wrote, writeErr] = f.write(text, "\n");
  f.close();
  return wrote === undefined ? tostring(writeErr) : undefined;
}

/**
 * Rewrites the file from the state zone. Control path only. Returns what went wrong, if
 * anything, for the control answer (state_file_error): a file that cannot be rewritten is
 * removed, since what it lists is no longer true and the next start would restore it.
 */
export function save(): string | undefined {
  const file = path();
  if (file === undefined) return undefined;
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
  const [encoded] = cjson.encode({ written: ngx.now(), scopes: scopes.length > 0 ? scopes : undefined });
  const text = encoded ?? "{}";
  const tmp = `${file}.${ngx.worker.pid()}.tmp`;
  const [f, openErr] = io.open(tmp, "w");
  let err: string | undefined = f === undefined ? tostring(openErr) : undefined;
  if (f !== undefined) {
    const [wrote, writeErr] = f.write(text, "\n");
    f.close();
    if (wrote === undefined) err = writeErr;
    else {
      const [renamed, renameErr] = os.rename(tmp, file);
      if (renamed === undefined) err = renameErr;
    }
    if (err !== undefined) os.remove(tmp);
  }
  // No temporary file (the directory is not writable): the file itself may still be.
  if (err !== undefined && writeInPlace(file, text) === undefined) err = undefined;
  if (err === undefined) return undefined;
  const [removed, removeErr] = os.remove(file);
  // Each control answer says so (state_file_error); the log, once per burst and worker.
  if (removed !== undefined || string.find(tostring(removeErr), "No such file", 1, true)[0] !== undefined) {
    logOnce(ngx.ERR, "state-file", `intermission: cannot write the pause state to ${file}: ${err}; removed it, so a restart or binary upgrade now restores no pause (set setup({ state_file = ... }) to a path the workers can write, or false)`);
    return `cannot write ${file} (${err}); removed it: a restart or binary upgrade restores no pause`;
  }
  logOnce(ngx.ERR, "state-file", `intermission: cannot write the pause state to ${file}: ${err}; nor remove it: ${tostring(removeErr)}; a restart or binary upgrade would restore the pauses it still lists`);
  return `cannot write ${file} (${err}) nor remove it (${tostring(removeErr)}): a restart or binary upgrade would restore what it lists`;
}

/** Why an entry is not one the control API could have made, or undefined if it is. */
function invalid(e: Entry, now: number): string | undefined {
  if (!validScope(e.scope)) return "not a valid scope name";
  // x !== x: NaN; math.huge: 1e999 decodes to infinity.
  if (e.until !== e.until || e.until < 0 || e.until > now + MAX_TTL + CLOCK_MARGIN) return `until ${e.until} is not within the longest ttl (${MAX_TTL} s) from now`;
  if (e.since !== e.since || e.since <= 0 || e.since > now + CLOCK_MARGIN) return `since ${e.since} is not a time up to now`;
  if (e.reason.length > MAX_REASON) return `reason longer than ${MAX_REASON} bytes`;
  return undefined;
}

/** The file's valid entries. `report`: log a notice for each entry skipped (setup only, not the watcher's every look). */
function load(file: string, report = false): Saved | undefined {
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
        const entry: Entry = { scope: e.scope, mode: e.mode, since: e.since, until: e.until, reason: type(e.reason) === "string" ? e.reason : "" };
        const why = invalid(entry, ngx.now());
        if (why === undefined) scopes.push(entry);
        else if (report) ngx.log(ngx.NOTICE, `intermission: state file ${file}: skipped the ${e.mode} of a scope: ${why}`);
      } else if (report) {
        ngx.log(ngx.NOTICE, `intermission: state file ${file}: skipped an entry that is not a pause or maintenance`);
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
  const saved = load(file, true);
  if (saved === undefined) return;
  const now = ngx.now();
  for (const e of saved.scopes) {
    if (e.until !== 0 && e.until <= now) continue;
    const keys = keysFor(e.scope);
    // In the master before any worker exists: no lock is needed to make it.
    const [made, err] = createLocked(keys, settings.cfg.max_scopes);
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

/** The file's entry for a scope, if the file was written well after this pause began. */
function newerEntry(saved: Saved, keys: ScopeKeys): Entry | undefined | false {
  if (saved.written < num(zones.state, keys.since) + CLOCK_MARGIN) return false;
  for (const e of saved.scopes) if (e.scope === keys.scope) return e;
  return undefined;
}

/**
 * Takes on what the file says of a scope stopped here, if it is later or stricter: a
 * later until (0, no expiry, is latest), maintenance where it is paused; with them the
 * file's reason. Never earlier or milder: a file a moment behind a change made in this
 * nginx must not undo it. Caller holds the scope's lock. Returns what changed, if anything.
 */
function adoptLocked(keys: ScopeKeys, e: Entry): string | undefined {
  const st = zones.state;
  const mode = modeOf(keys);
  if (mode !== "paused" && mode !== "maintenance") return undefined;
  const until = num(st, keys.until);
  const later = until !== 0 && (e.until === 0 || e.until > until);
  const stricter = mode === "paused" && e.mode === "maintenance";
  if (!later && !stricter) return undefined;
  if (later) st.safe_set(keys.until, e.until);
  st.safe_set(keys.reason, e.reason);
  if (stricter) writeMode(keys, mode, "maintenance");
  return `was=${mode} mode=${modeOf(keys)} until=${num(st, keys.until)}`;
}

function adopted(keys: ScopeKeys, what: string, saved: Saved): void {
  ngx.log(ngx.NOTICE, `intermission: audit action=adopt scope=${keys.scope} reason=state-file ${what} written=${saved.written}`);
}

/**
 * release.ts, under the scope's lock, when a pause's until has passed: true if the file
 * (written after this pause began) carries it on, which this worker then takes on. So an
 * old worker never resumes on its stale until after a refresh through the new master. One
 * read of a small file per expiry, never on the hot path of a running node.
 */
function carriedOn(this: void, keys: ScopeKeys, now: number): boolean {
  const file = path();
  if (file === undefined) return false;
  const [ok, saved] = pcall(load, file);
  if (!ok || saved === undefined) return false;
  const e = newerEntry(saved, keys);
  if (e === undefined || e === false) return false;
  const what = adoptLocked(keys, e);
  if (what === undefined) return false;
  adopted(keys, what, saved);
  waiters.poke();
  const until = num(zones.state, keys.until);
  return until === 0 || now < until;
}

/**
 * The watcher, while this worker holds requests: a scope stopped here that the file,
 * written well after its pause began, no longer lists was resumed through another
 * master (a binary upgrade): resume it here too. One it lists later or stricter (a
 * refresh, a maintenance through the other master) is taken on (adoptLocked).
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
    const e = newerEntry(saved, keys);
    if (e === false) continue;
    if (e !== undefined) {
      const [what] = release.withScopeLock(keys, (k) => adoptLocked(k, e) ?? "");
      if (what !== undefined && what !== "") {
        adopted(keys, what, saved);
        waiters.poke();
      }
      continue;
    }
    const [next] = release.withScopeLock(keys, (k) => release.resumeLocked(k, ngx.now()));
    if (next !== undefined) {
      ngx.log(ngx.NOTICE, `intermission: audit action=resume scope=${keys.scope} reason=state-file was=${mode} written=${saved.written}`);
      waiters.poke();
    }
  }
}

waiters.setLookOutside(lookOutside);
release.setExpiryCheck(carriedOn);
