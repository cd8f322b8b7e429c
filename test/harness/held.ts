// Helpers shared by the engine tests: ids, a plain sleep (for time that must pass, such
// as a TTL), holding requests in a known order, and waiting until a scope is idle.
import assert from "node:assert/strict";
import type { NginxNode } from "./node.ts";
import { PendingRequest, waitFor } from "./http.ts";

export const ids = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i + 1}`);

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Sends requests one at a time, each once the previous is held, so hold order is known. */
export async function holdInOrder(node: NginxNode, paths: string[], scope = "default"): Promise<PendingRequest[]> {
  const pending: PendingRequest[] = [];
  const start = (await node.status(scope)).held;
  for (const [i, p] of paths.entries()) {
    pending.push(node.send(p));
    await node.held(start + i + 1, scope);
  }
  return pending;
}

/** Waits until nothing is held, queued, leased or in flight and no drain runs; fails with the figures. */
export async function assertIdle(node: NginxNode, scope = "default", ms = 5000): Promise<any> {
  let last: any;
  try {
    await waitFor(`scope ${scope} idle`, async () => {
      last = await node.status(scope);
      return last.held === 0 && last.queued === 0 && last.release.leases === 0 && last.in_flight === 0 && last.draining === false;
    }, ms);
  } catch {
    assert.fail(`scope ${scope} not idle: held=${last?.held} queued=${last?.queued} leases=${last?.release?.leases} in_flight=${last?.in_flight} draining=${last?.draining}`);
  }
  return last;
}
