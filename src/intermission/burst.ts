// Log lines that a storm would repeat once per request (a full queue zone, refusals past
// max_held) are written once per burst instead: the first at once, then at most one per
// QUIET seconds and per worker, saying how many were left out since. Hundreds of
// thousands of identical lines would cost the disk more than the storm costs the node.

/** Seconds between two lines of one kind in one worker. */
const QUIET = 10;

interface Burst { until: number; left: number }
const bursts: { [kind: string]: Burst | undefined } = {};

/**
 * Logs `message` at `level` unless a line of this `kind` went out less than QUIET seconds
 * ago in this worker; then it only counts it. Returns whether it logged.
 */
export function logOnce(level: number, kind: string, message: string): boolean {
  const now = ngx.now();
  let b = bursts[kind];
  if (b === undefined) {
    b = { until: 0, left: 0 };
    bursts[kind] = b;
  }
  if (now < b.until) {
    b.left++;
    return false;
  }
  const note = b.left > 0 ? ` (and ${b.left} more like it in this worker since the last such line)` : "";
  ngx.log(level, `${message}${note}`);
  b.left = 0;
  b.until = now + QUIET;
  return true;
}
