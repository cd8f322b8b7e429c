// Requests passed to the upstream and not yet finished, for this whole node.
//
// Counting in the shared dict would cost two writes per request on the hot path, so
// each worker counts in a Lua number and publishes it under its own key only when it
// crosses zero or has drifted by FLUSH_EVERY. The published value is therefore exact
// about the one thing drain needs (a worker publishes 0 only when it has nothing in
// flight) and within FLUSH_EVERY - 1 per worker otherwise.
//
// Keys are per worker pid, so the workers of a reload never overwrite each other; they
// expire an hour after the last publish, which clears what a crashed worker left.
import { zones } from "./shm";

const FLUSH_EVERY = 8;
const KEY_PREFIX = "inflight|";
const KEY_TTL = 3600;

let here = 0;
let drift = 0;
let key = "";

function publish(): void {
  if (key === "") key = KEY_PREFIX + ngx.worker.pid();
  zones.state.set(key, here, KEY_TTL);
  drift = 0;
}

/** A request is passed to the upstream. */
export function enter(): void {
  here++;
  drift++;
  if (here === 1 || drift >= FLUSH_EVERY) publish();
}

/** A request finished (log phase). Never below zero: see the README on pairing. */
export function leave(): void {
  if (here <= 0) return;
  here--;
  drift--;
  if (here === 0 || drift <= -FLUSH_EVERY) publish();
}

/** The node's total as published by its workers. Scans the state zone: control path only. */
export function total(): number {
  const zone = zones.state;
  const prefixLength = KEY_PREFIX.length;
  let sum = 0;
  for (const k of zone.get_keys(0)) {
    if (string.sub(k, 1, prefixLength) === KEY_PREFIX) {
      const [v] = zone.get(k);
      if (type(v) === "number") sum += v as number;
    }
  }
  return sum;
}
