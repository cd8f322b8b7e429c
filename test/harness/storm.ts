// A storm of requests as fast as this host can send them: wrk (Debian package `wrk`)
// when it is installed, else a Node loop on as many keep-alive connections. Only ever
// against a test node on this machine: a loopback address, or the node container's own
// address on Docker's bridge (stormUrl), which skips Docker's port proxy (ten times the
// rate on a small host).
import { execFile } from "node:child_process";
import http from "node:http";
import { promisify } from "node:util";
import type { StartedTestContainer } from "testcontainers";

const run = promisify(execFile);

export interface StormResult {
  tool: "wrk" | "node";
  requests: number;
  /** Answers that were not 2xx/3xx (wrk's "Non-2xx or 3xx responses"). */
  non2xx: number;
  seconds: number;
  rate: number;
}

async function haveWrk(): Promise<boolean> {
  try {
    await run("sh", ["-c", "command -v wrk"]);
    return true;
  } catch {
    return false;
  }
}

/** The node's front server (:8080) at its container's address, and that address. */
export function stormUrl(container: StartedTestContainer, path: string): { url: string; host: string } {
  const network = container.getNetworkNames()[0];
  const host = container.getIpAddress(network);
  return { url: `http://${host}:8080${path}`, host };
}

function assertLocal(url: string, containerHost?: string): void {
  const host = new URL(url).hostname;
  if (!["127.0.0.1", "localhost", "[::1]", containerHost].includes(host)) throw new Error(`storm: a test node on this machine only, not ${host}`);
}

/** Sends GET `url` on `connections` connections for `seconds`, as fast as they answer. */
export async function storm(url: string, connections: number, seconds: number, containerHost?: string): Promise<StormResult> {
  assertLocal(url, containerHost);
  if (await haveWrk()) {
    const { stdout } = await run("wrk", ["-t2", `-c${connections}`, `-d${seconds}s`, url], { maxBuffer: 1 << 20 });
    const requests = Number(/(\d+) requests in/.exec(stdout)?.[1] ?? 0);
    const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(stdout)?.[1] ?? 0);
    return { tool: "wrk", requests, non2xx, seconds, rate: Math.round(requests / seconds) };
  }
  let requests = 0;
  let non2xx = 0;
  const end = Date.now() + seconds * 1000;
  const client = async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    while (Date.now() < end) {
      const status = await new Promise<number>((resolve) => {
        http.get(url, { agent }, (res) => { res.resume(); res.on("end", () => resolve(res.statusCode ?? 0)); }).on("error", () => resolve(0));
      });
      requests++;
      if (status < 200 || status >= 400) non2xx++;
    }
    agent.destroy();
  };
  await Promise.all(Array.from({ length: connections }, client));
  return { tool: "node", requests, non2xx, seconds, rate: Math.round(requests / seconds) };
}
