// Is the worker that wrote a ticket or holds a lease still alive?
//
// A ticket (w|t) and a lease (l|g) carry their holder's pid in the shared-dict flags
// (no extra key, no extra memory). A worker killed with SIGKILL (OOM killer, segfault)
// never leaves its tickets nor returns its leases; without this test they would cost
// the survivors a ticket's whole max_hold and a lease's release_lease. kill(pid, 0)
// asks the kernel without sending anything: 0 = alive; ESRCH = no such process; EPERM =
// a process of another user has that pid now (reused): alive, as far as we can tell.
// The workers of one nginx run as one user, and the old workers of a reload or binary
// upgrade are alive while they drain, so "alive" is right for them.
//
// A pid reused by a new worker of ours reads as alive: the ticket then waits for its
// deadline (+ GRACE) and the lease for release_lease, as before this test: bounded.
// Only the release step and the control path ask (never the hot path), and answers are
// cached per worker: "alive" for ALIVE_FOR, "gone" for GONE_FOR.
import { cdef, errno, C } from "ffi";

const ESRCH = 3;
const ALIVE_FOR = 0.25;
const GONE_FOR = 60;
const CACHE_LIMIT = 64;

let declared = false;
let available = false;
let self = 0;
const cache: { [pid: number]: { gone: boolean; at: number } | undefined } = {};
let cached = 0;

/** C.kill, or an error if the declaration failed. */
function killFunction(this: void): unknown {
  return C.kill;
}

// No closure is made in declare() (nor in any function the release step calls): a
// function that makes one ends each of its returns with the bytecode UCLO, which the
// LuaJIT 2.1 of Debian and others cannot compile, so every trace through the release
// step (decide() asks gone() at each grant) would abort and run interpreted.
function declare(): boolean {
  if (!declared) {
    declared = true;
    // Another module may have declared it already: that is fine, C.kill is then there.
    pcall(cdef, "int kill(int pid, int sig);");
    const [ok] = pcall(killFunction);
    available = ok;
    self = ngx.worker.pid();
  }
  return available;
}

/** Asks the kernel, uncached. */
function probe(pid: number): boolean {
  if (C.kill(pid, 0) === 0) return false;
  return errno() === ESRCH;
}

/**
 * True only when the process `pid` is known to be gone. 0 or less (no pid recorded: a
 * ticket written by an earlier version) is never gone.
 */
export function gone(pid: number | undefined, now: number): boolean {
  if (pid === undefined || pid <= 0 || !declare() || pid === self) return false;
  const seen = cache[pid];
  if (seen !== undefined && now - seen.at < (seen.gone ? GONE_FOR : ALIVE_FOR)) return seen.gone;
  const isGone = probe(pid);
  if (seen === undefined) {
    if (cached >= CACHE_LIMIT) {
      for (const [k] of pairs(cache)) cache[k as number] = undefined;
      cached = 0;
    }
    cached++;
  }
  cache[pid] = { gone: isGone, at: now };
  return isGone;
}

/** This worker's pid, the holder recorded with its tickets. */
export function me(): number {
  if (self === 0) self = ngx.worker.pid();
  return self;
}
