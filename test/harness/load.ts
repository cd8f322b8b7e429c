// The load generator of the real-database scenarios: CONNECTIONS keep-alive clients,
// paced together at RATE requests per second, each request carrying a unique id, every
// one recorded (when it started and ended, status, error). A client that is waiting for
// an answer (a held request) sends nothing else, as a browser tab would; it does not
// catch up afterwards with a burst.
import http from "node:http";

export interface Sample {
  id: string;
  /** ms since the load started. */
  start: number;
  end: number;
  /** HTTP status, or 0 when no answer came (see error). */
  status: number;
  /** "timeout", or the socket error's code/message. */
  error?: string;
}

export interface LoadOptions {
  /** Requests per second, all clients together. */
  rate?: number;
  connections?: number;
  /** A client gives up on a request after this long (counted as a client timeout). */
  timeoutMs?: number;
  /** Prefix of every request id, so a run's rows can be told apart. */
  prefix: string;
  /** The application's route, /write by default. */
  path?: string;
}

export interface LoadSummary {
  requests: number;
  ok: number;
  /** Answers other than 200, by status. */
  failedByStatus: Record<string, number>;
  /** Requests that got no answer, by error (timeouts included). */
  errors: Record<string, number>;
  failed: number;
  timeouts: number;
  slowestMs: number;
  p50Ms: number;
  p99Ms: number;
  /** Ids answered 200 whose body did not carry the same id. */
  mismatched: number;
}

/** Only loopback: the load never goes anywhere but this machine's mapped ports. */
function assertLoopback(url: URL): void {
  if (!["127.0.0.1", "localhost", "[::1]"].includes(url.hostname)) {
    throw new Error(`load: refusing to send load to ${url.host}: loopback addresses only`);
  }
}

export class Load {
  readonly samples: Sample[] = [];
  private running = false;
  private clients: Promise<void>[] = [];
  private t0 = 0;
  private agents: http.Agent[] = [];
  private mismatched = 0;

  constructor(private readonly base: string, private readonly opts: LoadOptions) {
    assertLoopback(new URL(base));
  }

  /** ms since start(). */
  now(): number {
    return performance.now() - this.t0;
  }

  start(): void {
    const rate = this.opts.rate ?? 300;
    const n = this.opts.connections ?? 16;
    const interval = (1000 * n) / rate;
    this.running = true;
    this.t0 = performance.now();
    for (let c = 0; c < n; c++) {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      this.agents.push(agent);
      this.clients.push(this.client(c, agent, interval, (c * interval) / n));
    }
  }

  /** Stops sending and waits for every outstanding request to end. */
  async stop(): Promise<LoadSummary> {
    this.running = false;
    await Promise.all(this.clients);
    for (const a of this.agents) a.destroy();
    return this.summary();
  }

  private async client(c: number, agent: http.Agent, interval: number, offset: number): Promise<void> {
    let next = offset;
    for (let i = 0; this.running; i++) {
      const wait = next - this.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      if (!this.running) break;
      const started = this.now();
      await this.once(`${this.opts.prefix}-${c}-${i}`, agent, started);
      next = Math.max(next + interval, this.now());
    }
  }

  private once(id: string, agent: http.Agent, start: number): Promise<void> {
    const timeoutMs = this.opts.timeoutMs ?? 20_000;
    return new Promise((resolve) => {
      let settled = false;
      const done = (status: number, error?: string) => {
        if (settled) return;
        settled = true;
        this.samples.push({ id, start, end: this.now(), status, ...(error ? { error } : {}) });
        resolve();
      };
      const req = http.get(`${this.base}${this.opts.path ?? "/write"}?id=${encodeURIComponent(id)}`, { agent }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk) => (body += chunk));
        res.on("end", () => {
          if (res.statusCode === 200) {
            try {
              if (JSON.parse(body).id !== id) this.mismatched++;
            } catch {
              this.mismatched++;
            }
          }
          done(res.statusCode ?? 0);
        });
        res.on("error", (e: NodeJS.ErrnoException) => done(0, e.code ?? e.message));
      });
      req.setTimeout(timeoutMs, () => {
        done(0, "timeout");
        req.destroy();
      });
      req.on("error", (e: NodeJS.ErrnoException) => done(0, e.code ?? e.message));
    });
  }

  summary(): LoadSummary {
    const failedByStatus: Record<string, number> = {};
    const errors: Record<string, number> = {};
    let ok = 0;
    for (const s of this.samples) {
      if (s.status === 200) ok++;
      else if (s.status !== 0) failedByStatus[s.status] = (failedByStatus[s.status] ?? 0) + 1;
      else errors[s.error ?? "?"] = (errors[s.error ?? "?"] ?? 0) + 1;
    }
    const ms = this.samples.map((s) => s.end - s.start).sort((a, b) => a - b);
    const pct = (p: number) => (ms.length ? Math.round(ms[Math.min(ms.length - 1, Math.ceil((p / 100) * ms.length) - 1)]) : 0);
    return {
      requests: this.samples.length,
      ok,
      failedByStatus,
      errors,
      failed: this.samples.length - ok,
      timeouts: errors.timeout ?? 0,
      slowestMs: Math.round(ms[ms.length - 1] ?? 0),
      p50Ms: pct(50),
      p99Ms: pct(99),
      mismatched: this.mismatched,
    };
  }

  /** The ids answered 200. */
  okIds(): string[] {
    return this.samples.filter((s) => s.status === 200).map((s) => s.id);
  }
}
