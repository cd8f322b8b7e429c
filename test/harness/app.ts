// A second nginx inside the test container that plays the application: tests start and
// stop it (a crash, a restart, a port that is not listening yet) while intermission's
// nginx holds and retries in front of it. Each test writes only its own locations: what
// the application records and answers. The prologue, the body reading and the
// start/stop/listening helpers are written once here.
import { NginxNode } from "./node.ts";
import { waitFor } from "./http.ts";

/**
 * Lua that leaves the request body in `body` (a string, "" when there is none), whether
 * nginx kept it in memory or wrote it to a temp file (past client_body_buffer_size).
 */
export const READ_BODY_LUA = `
                ngx.req.read_body()
                local body = ngx.req.get_body_data()
                if not body then
                    local f = ngx.req.get_body_file()
                    if f then local h = io.open(f, "rb"); body = h:read("*a"); h:close() end
                end
                body = body or ""`;

export interface AppSpec {
  /** Names its config, pid, error log and body temp path (/etc/intermission/NAME.conf, /run/NAME.pid). */
  name: string;
  /** The listen directive's argument, e.g. "8082" or "127.0.0.1:8082". */
  listen: string;
  /** A shared dict for what the application records: `name size`, e.g. "rec 16m" (none if unset). */
  dict?: string;
  /** error_log level (default notice). */
  logLevel?: string;
  /** More http-level directives (log_format, client_max_body_size ...). */
  http?: string;
  /** The server's locations (and server-level directives). */
  server: string;
  /**
   * How stop() stops it: "stop" (default, fast: requests it had received are cut) or
   * "quit" (graceful, a systemctl restart's stop: requests in flight finish).
   */
  stopSignal?: "stop" | "quit";
}

/** http-level: the log format of an applied log (see TestApp.appliedLog). */
export const APPLIED_LOG_FORMAT = `
    log_format ids $arg_id;`;

export class TestApp {
  readonly confPath: string;
  readonly pidPath: string;
  readonly errorLogPath: string;
  readonly port: number;
  /**
   * Where a location of the application logs the ?id= of each request it applies, with
   * `access_log ${app.appliedLog} ids;` (http: APPLIED_LOG_FORMAT). A file, so it outlasts a
   * restart of the application (its shared dict starts afresh).
   */
  readonly appliedLog: string;
  /** Whether this object started it (and has not stopped it since). */
  up = false;

  constructor(readonly spec: AppSpec) {
    this.confPath = `/etc/intermission/${spec.name}.conf`;
    this.pidPath = `/run/${spec.name}.pid`;
    this.errorLogPath = `/var/log/nginx/${spec.name}-error.log`;
    this.port = Number(spec.listen.split(":").at(-1));
    this.appliedLog = `/tmp/${spec.name}-applied.log`;
  }

  /** The nginx.conf of the application. */
  config(): string {
    const s = this.spec;
    return `
include /etc/nginx/modules-enabled/*.conf;
worker_processes 1;
pid ${this.pidPath};
error_log ${this.errorLogPath} ${s.logLevel ?? "notice"};
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path /tmp/${s.name}-body;${s.dict ? `
    lua_shared_dict ${s.dict};` : ""}${s.http ?? ""}
    server {
        listen ${s.listen};${s.server}
    }
}`;
  }

  /** For NginxNode.start's `files`. */
  file(): { content: string; target: string } {
    return { content: this.config(), target: this.confPath };
  }

  /** Whether something listens on the application's port (read from /proc/net/tcp: no client needed). */
  async listening(node: NginxNode): Promise<boolean> {
    const hex = this.port.toString(16).toUpperCase().padStart(4, "0");
    const n = await node.exec(["sh", "-c", `cat /proc/net/tcp | grep -ci ':${hex} .* 0A ' || true`]);
    return n.trim() !== "0";
  }

  /** Starts it (unless this object started it already) and waits until it listens. */
  async start(node: NginxNode): Promise<void> {
    if (this.up) return;
    await node.exec(["nginx", "-c", this.confPath]);
    this.up = true;
    await waitFor(`${this.spec.name} listening`, () => this.listening(node));
  }

  /** Stops it as spec.stopSignal says (default fast: -s stop), waiting until the port is closed. */
  async stop(node: NginxNode): Promise<void> {
    if (!this.up) return;
    await node.exec(["nginx", "-c", this.confPath, "-s", this.spec.stopSignal ?? "stop"]);
    this.up = false;
    await waitFor(`${this.spec.name} gone`, async () => !(await this.listening(node)));
  }

  /** The body of a GET of `path` sent straight to the application, from inside the container. */
  async get(node: NginxNode, path: string): Promise<string> {
    const out = await node.exec(["bash", "-c", `exec 3<>/dev/tcp/127.0.0.1/${this.port} && printf 'GET ${path} HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3`]);
    return out.slice(out.indexOf("\r\n\r\n") + 4);
  }

  /** The ids in appliedLog (every request applied since it was last emptied), in order. */
  async applied(node: NginxNode): Promise<string[]> {
    return (await node.exec(["sh", "-c", `cat ${this.appliedLog} 2>/dev/null || true`])).split("\n").filter((l) => l !== "");
  }

  /** Empties appliedLog. */
  async clearApplied(node: NginxNode): Promise<void> {
    await node.exec(["sh", "-c", `: > ${this.appliedLog}`]);
  }

  /** Fast stop whether or not this object started it, waiting until its master is gone. */
  async kill(node: NginxNode): Promise<void> {
    await node.exec(["sh", "-c", `nginx -c ${this.confPath} -s stop 2>/dev/null; while [ -e ${this.pidPath} ]; do sleep 0.01; done; true`]);
    this.up = false;
  }
}
