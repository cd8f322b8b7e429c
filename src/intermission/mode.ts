// A scope's mode and the node-wide busy count that the hot path reads.
//
//   running --pause--> paused --resume--> draining --(backlog granted)--> running
//   any --maintenance--> maintenance --resume--> draining | running
//   running --upstream connection failed (outage.ts)--> outage --address accepts--> draining | running
//   outage --pause--> paused (an operator's pause takes it over; resume releases as usual)
//
// Every write happens under the scope's lock (release.ts), so two transitions of one
// scope never race and BUSY_KEY counts each scope that is not running exactly once.
import { ScopeKeys, zones, BUSY_KEY } from "./shm";

export type Mode = "running" | "paused" | "maintenance" | "draining" | "outage";

export function modeOf(keys: ScopeKeys): Mode {
  const [m] = zones.state.get(keys.mode);
  return m === undefined ? "running" : (m as Mode);
}

/** Writes the mode and keeps the busy count right. Caller holds the scope's lock. */
export function writeMode(keys: ScopeKeys, from: Mode, to: Mode): LuaMultiReturn<[boolean, string | undefined]> {
  const zone = zones.state;
  if (to === "running") {
    zone.delete(keys.mode);
  } else {
    const [ok, err] = zone.safe_set(keys.mode, to);
    if (!ok) return $multi(false, `cannot write the mode of scope ${keys.scope}: ${err}`);
  }
  if (from === "running" && to !== "running") {
    zone.safe_add(BUSY_KEY, 0);
    zone.incr(BUSY_KEY, 1);
  } else if (from !== "running" && to === "running") {
    // Never deleted: a delete could race another scope's increment and lose it.
    zone.incr(BUSY_KEY, -1);
  }
  return $multi(true, undefined);
}
