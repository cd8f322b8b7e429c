// Prometheus text exposition (format 0.0.4) for every scope this node has seen.
import { keysFor } from "./shm";
import * as state from "./state";
import * as release from "./release";
import * as counters from "./counters";
import * as inflight from "./inflight";

const STATES: state.Mode[] = ["running", "paused", "maintenance", "draining", "outage"];

function label(value: string): string {
  const [escaped] = string.gsub(value, '[\\"\n]', { "\\": "\\\\", '"': '\\"', "\n": "\\n" });
  return escaped;
}

export function renderMetrics(scopes: string[], current: string): string {
  let seen = false;
  for (const s of scopes) if (s === current) seen = true;
  if (!seen) scopes.push(current);

  const lines: string[] = [];
  const family = (name: string, kind: string, help: string): void => {
    lines.push(`# HELP ${name} ${help}`);
    lines.push(`# TYPE ${name} ${kind}`);
  };

  family("intermission_state", "gauge", "1 for the scope's current state, 0 for the others.");
  for (const s of scopes) {
    const mode = state.settle(keysFor(s));
    for (const m of STATES) lines.push(`intermission_state{scope="${label(s)}",state="${m}"} ${m === mode ? 1 : 0}`);
  }
  family("intermission_held", "gauge", "Requests held on this node now.");
  for (const s of scopes) lines.push(`intermission_held{scope="${label(s)}"} ${release.heldNow(keysFor(s))}`);
  family("intermission_queued", "gauge", "Tickets waiting for their turn on this node.");
  for (const s of scopes) lines.push(`intermission_queued{scope="${label(s)}"} ${release.queued(keysFor(s))}`);
  family("intermission_release_window", "gauge", "The release window now (slow start: 1 after a resume, doubling per success).");
  for (const s of scopes) lines.push(`intermission_release_window{scope="${label(s)}"} ${release.progress(keysFor(s)).window}`);
  family("intermission_release_leases", "gauge", "Window slots held by released requests whose response has not started.");
  for (const s of scopes) lines.push(`intermission_release_leases{scope="${label(s)}"} ${release.progress(keysFor(s)).leases}`);
  family("intermission_in_flight", "gauge", "Requests on this node passed to the upstream and not yet finished (all scopes).");
  lines.push(`intermission_in_flight ${inflight.total()}`);
  family("intermission_requests_total", "counter", "Held requests by outcome (held counts every hold).");
  for (const s of scopes) {
    for (const name of counters.COUNTER_NAMES) {
      lines.push(`intermission_requests_total{scope="${label(s)}",outcome="${name}"} ${counters.read(keysFor(s), name)}`);
    }
  }
  family("intermission_passed_unheld_total", "counter", "Requests passed unheld because their own scope (and default, the whole node) ran while another scope was stopped.");
  for (const [s, n] of pairs(counters.passedUnheldByScope())) lines.push(`intermission_passed_unheld_total{scope="${label(s as string)}"} ${n}`);
  family("intermission_hold_duration_seconds", "histogram", "How long held requests waited, whatever the outcome.");
  for (const s of scopes) {
    const [buckets, total, sum] = counters.holdHistogram(keysFor(s));
    const l = label(s);
    for (let i = 0; i < counters.HOLD_BUCKETS.length; i++) {
      lines.push(`intermission_hold_duration_seconds_bucket{scope="${l}",le="${counters.HOLD_BUCKETS[i]}"} ${buckets[i]}`);
    }
    lines.push(`intermission_hold_duration_seconds_bucket{scope="${l}",le="+Inf"} ${total}`);
    lines.push(`intermission_hold_duration_seconds_sum{scope="${l}"} ${sum}`);
    lines.push(`intermission_hold_duration_seconds_count{scope="${l}"} ${total}`);
  }
  family("intermission_outage_duration_seconds", "histogram", "How long unplanned outages lasted (from the first failed connection to the prober's first accepted one).");
  for (const s of scopes) {
    const [buckets, total, sum] = counters.holdHistogram(keysFor(s), "outage_");
    const l = label(s);
    for (let i = 0; i < counters.HOLD_BUCKETS.length; i++) {
      lines.push(`intermission_outage_duration_seconds_bucket{scope="${l}",le="${counters.HOLD_BUCKETS[i]}"} ${buckets[i]}`);
    }
    lines.push(`intermission_outage_duration_seconds_bucket{scope="${l}",le="+Inf"} ${total}`);
    lines.push(`intermission_outage_duration_seconds_sum{scope="${l}"} ${sum}`);
    lines.push(`intermission_outage_duration_seconds_count{scope="${l}"} ${total}`);
  }
  return table.concat(lines, "\n") + "\n";
}
