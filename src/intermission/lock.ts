// A node-wide lock in the state zone, in the manner of lua-resty-lock: `add` is atomic,
// the key expires so a crashed holder cannot wedge the node, and a waiter sleeps with
// back-off. Only state transitions take it; they are rare and short. It yields, so it
// is for the access, content and timer phases only.
import { zones, LOCK_KEY } from "./shm";

const EXPIRE = 5; // seconds: far longer than any transition takes
let serial = 0;

/** Returns a token to pass to unlock(), or (nil, err) on timeout. */
export function lock(timeout = 2): LuaMultiReturn<[string | undefined, string | undefined]> {
  serial++;
  const token = `${ngx.worker.pid()}:${serial}`;
  let waited = 0;
  let step = 0.001;
  while (true) {
    // safe_add: the state zone never evicts (shm.ts); "no memory" is an error like any other.
    const [ok, err] = zones.state.safe_add(LOCK_KEY, token, EXPIRE);
    if (ok) return $multi(token, undefined);
    if (err !== "exists") return $multi(undefined, `lock: ${err}`);
    if (waited >= timeout) return $multi(undefined, "lock: timeout");
    ngx.sleep(step);
    waited += step;
    step = math.min(step * 2, 0.05);
  }
}

export function unlock(token: string): void {
  const [holder] = zones.state.get(LOCK_KEY);
  if (holder === token) zones.state.delete(LOCK_KEY);
}
