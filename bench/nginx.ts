// The benchmark's nginx: one process tree on the host (no container port proxy in the
// path), with front servers that differ only in their Lua hooks:
//   intermission  :18080  access()/log() of intermission
//   empty hooks   :18083  empty access_by_lua_block / log_by_lua_block
//   plain         :18082  no Lua at all
// all proxying to the same recording backend on :18081.
import { execFileSync, spawn } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import path from "node:path";
import { toLua, LuaValue } from "../test/harness/nginx-config.ts";

export const PORTS = { intermission: 18080, backend: 18081, plain: 18082, empty: 18083 } as const;
export type Ports = { intermission: number; backend: number; plain: number; empty: number };

/** A second node's ports, for the fleet measurement. */
export const PORTS_B: Ports = { intermission: 28080, backend: 28081, plain: 28082, empty: 28083 };

export interface BenchNginxOptions {
  root: string;
  dir: string;
  workers: number;
  setup: { [k: string]: LuaValue };
  /** Run one worker in the foreground without a master (for valgrind). */
  singleProcess?: boolean;
  /** Only this front server (for callgrind runs). */
  only?: "intermission" | "empty";
  /**
   * The front servers' content: "proxy" (default) passes to the recording backend;
   * "empty_gif" answers 200 in place with nginx's own content handler, so that the
   * hooks' cost is measured against nginx's per-request work alone (callgrind's second
   * pair of rows). Not `return 200`: that answers in the rewrite phase, before the
   * access hook runs, so it would measure log() alone.
   */
  content?: "proxy" | "empty_gif";
  ports?: Ports;
}

const PROXY = `
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Request-Id $request_id;
            proxy_read_timeout 300s;
            proxy_pass http://backend;`;

/**
 * A root (dist/ and nginx/, as benchConfig reads them) named `name` under `dir`, whose
 * intermission module is the Lua source `module` instead of the built one: the bench's
 * stand-ins (the wiring alone, the bare hold), measured with the same config.
 */
export function stubRoot(root: string, dir: string, name: string, module: string): string {
  const stub = path.join(dir, name);
  mkdirSync(path.join(stub, "dist"), { recursive: true });
  mkdirSync(path.join(stub, "nginx"), { recursive: true });
  copyFileSync(path.join(root, "nginx/intermission.conf"), path.join(stub, "nginx/intermission.conf"));
  writeFileSync(path.join(stub, "dist/intermission.lua"), module);
  return stub;
}

export function benchConfig(o: BenchNginxOptions): string {
  const ports = o.ports ?? PORTS;
  const front = (name: "intermission" | "empty" | "plain", hooks: string) =>
    o.only !== undefined && o.only !== name ? "" : `
    server {
        listen 127.0.0.1:${ports[name]} backlog=16384;
        location / {
            ${hooks}
            ${o.content === "empty_gif" ? "empty_gif;" : PROXY}
        }
        location /_intermission/ {
            content_by_lua_block { require("intermission").control() }
        }
    }`;
  // Only the modules we need (not all of Debian's modules-enabled), from Debian's paths:
  // scripts/bench.sh installs Debian's nginx for the benchmark.
  return `
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
${o.singleProcess ? "master_process off;\ndaemon off;" : ""}
worker_processes ${o.singleProcess ? 1 : o.workers};
worker_rlimit_nofile 65536;
error_log ${o.dir}/error.log notice;
pid ${o.dir}/nginx.pid;
events { worker_connections 32768; multi_accept on; }
http {
    access_log off;
    client_body_temp_path ${o.dir}/body;
    proxy_temp_path ${o.dir}/proxy;
    lua_package_path "${o.root}/dist/?.lua;;";
    include ${o.root}/nginx/intermission.conf;
    lua_shared_dict backend 64m;
    init_by_lua_block { require("intermission").setup(${toLua(o.setup)}) }
    init_worker_by_lua_block { require("intermission").init_worker() }
    upstream backend { server 127.0.0.1:${ports.backend}; keepalive 512; }
${front("intermission", `access_by_lua_block { require("intermission").access() }
            log_by_lua_block    { require("intermission").log() }`)}
${front("empty", `access_by_lua_block { }
            log_by_lua_block    { }`)}
${front("plain", "")}
    server {
        listen 127.0.0.1:${ports.backend} backlog=16384;
        # The live keys in intermission's zones (get_keys(0) walks the whole zone: bench only).
        location = /_bench/keys {
            content_by_lua_block {
                ngx.say(string.format('{"state": %d, "queue": %d}',
                    #ngx.shared.intermission:get_keys(0), #ngx.shared.intermission_queue:get_keys(0)))
            }
        }
        location = /_backend/arrivals {
            content_by_lua_block {
                local d = ngx.shared.backend
                local out, n = {}, 0
                while true do
                    local v = d:lpop("ids")
                    if not v then break end
                    n = n + 1
                    out[n] = v
                end
                ngx.say(table.concat(out, "\\n"))
            }
        }
        location / {
            content_by_lua_block {
                local d = ngx.shared.backend
                if ngx.var.arg_record then
                    d:rpush("ids", (ngx.var.http_x_request_id or "-") .. " " .. ngx.now())
                end
                local delay = tonumber(ngx.var.arg_delay or "")
                if delay then ngx.sleep(delay) end
                ngx.say("ok")
            }
        }
    }
}
`;
}

export class BenchNginx {
  private constructor(readonly dir: string, readonly conf: string) {}

  static start(o: BenchNginxOptions): BenchNginx {
    mkdirSync(o.dir, { recursive: true });
    const conf = path.join(o.dir, "nginx.conf");
    writeFileSync(conf, benchConfig(o));
    execFileSync("nginx", ["-c", conf], { stdio: "inherit" });
    return new BenchNginx(o.dir, conf);
  }

  pid(): number {
    return Number(readFileSync(path.join(this.dir, "nginx.pid"), "utf8").trim());
  }

  /** Resident memory (KiB) of the worker processes. */
  workersRssKiB(): number {
    const out = execFileSync("ps", ["--ppid", String(this.pid()), "-o", "rss="], { encoding: "utf8" });
    return out.split("\n").filter(Boolean).reduce((a, l) => a + Number(l.trim()), 0);
  }

  /**
   * CPU time (user + system, ms) the worker processes have used so far, from /proc: what
   * the work costs, which a loaded machine moves far less than the wall-clock time.
   */
  workersCpuMs(): number {
    const out = execFileSync("ps", ["--ppid", String(this.pid()), "-o", "pid="], { encoding: "utf8" });
    const tick = 1000 / Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
    let ms = 0;
    for (const pid of out.split("\n").map((l) => l.trim()).filter(Boolean)) {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ms += (Number(fields[11]) + Number(fields[12])) * tick; // utime, stime (fields 14, 15)
    }
    return ms;
  }

  errorLog(): string {
    const f = path.join(this.dir, "error.log");
    return existsSync(f) ? readFileSync(f, "utf8") : "";
  }

  /** Stops nginx and waits until the master is gone, so the ports are free again. */
  stop(): void {
    let pid = 0;
    try {
      pid = this.pid();
      execFileSync("nginx", ["-c", this.conf, "-s", "stop"], { stdio: "ignore" });
    } catch {
      return; // not running
    }
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      try {
        process.kill(pid, 0);
      } catch {
        return;
      }
      execFileSync("sleep", ["0.05"]);
    }
    process.kill(pid, "SIGKILL");
  }
}

/** nginx in the foreground under callgrind; returns the child. */
export function spawnUnderCallgrind(conf: string, outFile: string) {
  return spawn("valgrind", ["--tool=callgrind", `--callgrind-out-file=${outFile}`, "nginx", "-c", conf], {
    stdio: ["ignore", "ignore", "pipe"],
  });
}

/** The fleet bench's nodes listen on FLEET_PORT_BASE + i (below the ephemeral port range); they share one plain backend. */
export const FLEET_PORT_BASE = 21000;
export const FLEET_BACKEND_PORT = 20999;

/**
 * One fleet node for the fleet table: one worker, intermission in front of the shared
 * backend, and the control API. Small connection limits: a hundred of these share the host.
 */
export function fleetNodeConfig(o: { root: string; dir: string; port: number; setup: { [k: string]: LuaValue } }): string {
  return `
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
error_log ${o.dir}/error.log notice;
pid ${o.dir}/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path ${o.dir}/body;
    proxy_temp_path ${o.dir}/proxy;
    lua_package_path "${o.root}/dist/?.lua;;";
    include ${o.root}/nginx/intermission.conf;
    init_by_lua_block { require("intermission").setup(${toLua(o.setup)}) }
    init_worker_by_lua_block { require("intermission").init_worker() }
    upstream backend { server 127.0.0.1:${FLEET_BACKEND_PORT}; keepalive 16; }
    server {
        listen 127.0.0.1:${o.port};
        location / {
            access_by_lua_block { require("intermission").access() }
            log_by_lua_block    { require("intermission").log() }
            # When the node sent it upstream: the clock that leaving the hold read last
            # (gate.ts updates it), taken as the upstream request is built.
            proxy_set_header X-Node-Sent $msec;
            ${PROXY}
        }
        location /_intermission/ {
            content_by_lua_block { require("intermission").control() }
        }
    }
}
`;
}

/**
 * The fleet nodes' shared backend. Each answer's body is the time the request arrived
 * and the time its node sent it (X-Node-Sent): one nginx worker on the same two cores as
 * a hundred nodes waits its turn for the CPU, so arrival alone measures the backend's
 * scheduling too. The answer itself comes 0.3 s later, so that the bench's client,
 * reading a hundred answers, does not compete for the CPU with nodes still forwarding.
 */
export function fleetBackendConfig(dir: string): string {
  return `
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
error_log ${dir}/error.log notice;
pid ${dir}/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path ${dir}/body;
    proxy_temp_path ${dir}/proxy;
    server {
        listen 127.0.0.1:${FLEET_BACKEND_PORT} backlog=4096;
        location / {
            content_by_lua_block {
                ngx.update_time()
                local arrived = ngx.now()
                ngx.sleep(0.3)
                ngx.say(string.format("%.3f %s", arrived, ngx.var.http_x_node_sent or "-"))
            }
        }
    }
}
`;
}

/** nginx from a config text, on the host. */
export class PlainNginx {
  private constructor(readonly dir: string, readonly conf: string) {}

  static start(dir: string, config: string): PlainNginx {
    mkdirSync(dir, { recursive: true });
    const conf = path.join(dir, "nginx.conf");
    writeFileSync(conf, config);
    execFileSync("nginx", ["-c", conf], { stdio: "inherit" });
    return new PlainNginx(dir, conf);
  }

  errorLog(): string {
    const f = path.join(this.dir, "error.log");
    return existsSync(f) ? readFileSync(f, "utf8") : "";
  }

  /** Asks nginx to stop (fast shutdown) without waiting. Returns the master's pid. */
  signalStop(): number {
    try {
      const pid = Number(readFileSync(path.join(this.dir, "nginx.pid"), "utf8").trim());
      process.kill(pid, "SIGTERM");
      return pid;
    } catch {
      return 0; // not running
    }
  }
}
