// Changes this node sent to Redis whose outcome stayed unknown (remote.settle() got no
// answer): such a change can still run in Redis later. The node's next change to the same
// scope fences them in the same script, so none of them can land after it (a CLI that got
// "unknown" for a pause resumes, and that resume must be the last word).
// The sync loop settles them once Redis answers again (fleet/sync.ts), and logs what
// became of each. One key in the state zone, "<scope> <id> <action>" lines, the oldest dropped beyond MAX; no Redis
// module is loaded here, so control can use it in local mode too (where it stays empty).
import { zones } from "../shm";
import { lock, unlock } from "../lock";

const KEY = "#fleet|unsettled";
/** At most this many remembered (each line some 60 bytes): the newest win. */
const MAX = 16;

function lines(): string[] {
  const out: string[] = [];
  const [v] = zones.state.get(KEY);
  if (typeof v !== "string") return out;
  for (const [line] of string.gmatch(v, "[^\n]+")) out.push(line);
  return out;
}

function store(list: string[]): void {
  if (list.length === 0) {
    zones.state.delete(KEY);
    return;
  }
  const [ok, err] = zones.state.safe_set(KEY, list.join("\n"));
  if (!ok) ngx.log(ngx.ERR, `intermission: fleet: cannot remember a change of unknown outcome: ${err}`);
}

/** The ids of this node's changes to `scope` whose outcome is unknown. */
export function forScope(scope: string): string[] {
  const ids: string[] = [];
  for (const line of lines()) {
    const [s, id] = string.match(line, "^(%S+) (%S+)");
    if (s === scope && id !== undefined) ids.push(id);
  }
  return ids;
}

export interface Unsettled {
  scope: string;
  id: string;
  action: string;
}

/** Every change of unknown outcome this node remembers (usually none: one shared-dict read). */
export function all(): Unsettled[] {
  const out: Unsettled[] = [];
  for (const line of lines()) {
    const [scope, id, action] = string.match(line, "^(%S+) (%S+) (%S+)$");
    if (scope !== undefined && id !== undefined && action !== undefined) out.push({ scope, id, action });
  }
  return out;
}

/** Remembers a change of unknown outcome. */
export function note(scope: string, id: string, action: string): void {
  const [token] = lock();
  const list = lines();
  list.push(`${scope} ${id} ${action}`);
  while (list.length > MAX) list.shift();
  store(list);
  if (token !== undefined) unlock(token);
}

/** Forgets the given ids of `scope`: they are settled (a later change fenced them, or the sync loop settled them). */
export function settled(scope: string, ids: string[]): void {
  const gone: { [key: string]: true } = {};
  for (const id of ids) gone[`${scope} ${id}`] = true;
  const [token] = lock();
  const list: string[] = [];
  for (const line of lines()) {
    const [key] = string.match(line, "^(%S+ %S+)");
    if (key === undefined || gone[key] === undefined) list.push(line);
  }
  store(list);
  if (token !== undefined) unlock(token);
}
