// Builds the nginx.conf a test node runs: intermission wired exactly as the README
// says, in front of a recording backend in the same nginx (127.0.0.1:8081).
import { LUA_PACKAGE_PATH, CONF_INCLUDE } from "./install.ts";

export type LuaValue = string | number | boolean | LuaValue[] | { [key: string]: LuaValue };

/** Renders a JS value as a Lua literal (test strings are plain ASCII). */
export function toLua(value: LuaValue): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (Array.isArray(value)) return `{ ${value.map(toLua).join(", ")} }`;
  return `{ ${Object.entries(value).map(([k, v]) => `${k} = ${toLua(v)}`).join(", ")} }`;
}

export interface ConfigOptions {
  /** setup() options. */
  setup?: { [key: string]: LuaValue };
  workers?: number;
  /** Extra directives inside `location /` (e.g. `set $intermission_scope x;`). */
  frontDirectives?: string;
  /** Extra server-level locations. */
  extraLocations?: string;
  /** nginx `resolver` (cosockets need one to connect to a host name). */
  resolver?: string;
  /** Where the hooks go: in each proxied location (default), or once at server level. */
  hooks?: "location" | "server";
  /** Extra directives at the main (top) level, e.g. worker_shutdown_timeout. */
  mainDirectives?: string;
  /** Extra directives in the front server block. */
  serverDirectives?: string;
  /** Extra directives at http level (e.g. an upstream group, the zones of another `dict`). */
  httpDirectives?: string;
  /** The hooks without setup() and without intermission.conf's shared dicts (a miswired node). */
  bare?: boolean;
}

/**
 * The header_filter and log hooks, one a line, indented by `indent` (default: a
 * server-level directive, as the README's wiring puts them once in the server block).
 */
export function serverHooks(indent = "        "): string {
  return `
${indent}header_filter_by_lua_block { require("intermission").header_filter() }
${indent}log_by_lua_block           { require("intermission").log() }`;
}

/** In a proxied location: the upstream's gateway errors go to the retry location. */
export const RETRY_ON_ERROR = `
            error_page 502 504 = @intermission_retry;
            recursive_error_pages on;`;

/**
 * The retry location (a server-level block) that RETRY_ON_ERROR and "not applied" send a
 * request to. `withHooks`: its own header_filter and log hooks, for a server without them
 * at server level (the log phase runs with the final location's configuration, so a
 * request answered here, a 502 cut-off say, logs here).
 */
export function retryLocation(withHooks = false): string {
  return `
        location @intermission_retry {${withHooks ? serverHooks("            ") : ""}
            content_by_lua_block { require("intermission").retry() }
        }`;
}

/**
 * A location whose scope is the request's ?scope= (any name), with the access and log
 * hooks, in front of the recording backend: tests that make scopes by the thousand.
 */
export const SCOPED_LOCATION = `
        location /scoped/ {
            set $intermission_scope $arg_scope;
            access_by_lua_block { require("intermission").access() }
            log_by_lua_block    { require("intermission").log() }
            proxy_pass http://backend;
        }`;

const LUA_HOOKS = `
            access_by_lua_block        { require("intermission").access() }${serverHooks("            ")}`;

const PROXY = `
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 300s;
            proxy_pass http://backend;`;

/** The backend records each arrival's id (?id=) and the concurrency it saw. */
const BACKEND = `
    server {
        listen 8081 backlog=4096;
        location = /_backend/arrivals {
            content_by_lua_block {
                local d = ngx.shared.backend
                -- Shared-dict lists have no range read: pop all, then push them back
                -- so a second read sees the same.
                local function read(name)
                    local out, n = {}, 0
                    while true do
                        local v = d:lpop(name)
                        if not v then break end
                        n = n + 1
                        out[n] = v
                    end
                    for _, v in ipairs(out) do d:rpush(name, v) end
                    return out
                end
                local ids, conc = read("ids"), read("conc")
                local cjson = require("cjson.safe")
                ngx.say(cjson.encode({ ids = ids, concurrency = conc, active = d:get("active") or 0 }))
            }
        }
        location = /_backend/reset {
            content_by_lua_block {
                local d = ngx.shared.backend
                d:flush_all()
                ngx.say("reset")
            }
        }
        location = /_backend/fail {
            content_by_lua_block {
                -- The app answers 503 for ?seconds= from now (a cold database, say).
                ngx.shared.backend:set("fail_until", ngx.now() + tonumber(ngx.var.arg_seconds))
                ngx.say("failing")
            }
        }
        location = /_backend/hang {
            content_by_lua_block {
                -- The app accepts connections and answers nothing for ?seconds= from now.
                ngx.shared.backend:set("hang_until", ngx.now() + tonumber(ngx.var.arg_seconds))
                ngx.say("hanging")
            }
        }
        location = /_backend/times {
            content_by_lua_block {
                -- When each hung (?list=hung_at) or failed (?list=failed_at) request arrived.
                local d = ngx.shared.backend
                local name, out = ngx.var.arg_list, {}
                while true do
                    local v = d:lpop(name)
                    if not v then break end
                    out[#out + 1] = v
                end
                for _, v in ipairs(out) do d:rpush(name, v) end
                ngx.say(require("cjson.safe").encode(out))
            }
        }
        location / {
            content_by_lua_block {
                local d = ngx.shared.backend
                local hang = d:get("hang_until") or 0
                if hang > ngx.now() then
                    d:rpush("hung_at", ngx.now())
                    ngx.sleep(hang - ngx.now())
                end
                if (d:get("fail_until") or 0) > ngx.now() then
                    d:rpush("failed", ngx.var.arg_id or "-")
                    d:rpush("failed_at", ngx.now())
                    return ngx.exit(503)
                end
                local active = d:incr("active", 1, 0)
                d:rpush("ids", ngx.var.arg_id or "-")
                d:rpush("conc", active)
                local status = tonumber(ngx.var.arg_status or "")
                local stream = tonumber(ngx.var.arg_stream or "")
                if stream then
                    -- A stream (SSE-like): the response starts now, the body comes later.
                    ngx.header["Content-Type"] = "text/event-stream"
                    ngx.print("event: start\\n\\n")
                    ngx.flush(true)
                    ngx.sleep(stream)
                end
                local delay = tonumber(ngx.var.arg_delay or "")
                if delay then ngx.sleep(delay) end
                d:incr("active", -1, 0)
                if status then ngx.status = status end
                ngx.say("ok ", ngx.var.arg_id or "-")
            }
        }
    }`;

export function nginxConfig(opts: ConfigOptions = {}): string {
  const setup = toLua(opts.setup ?? {});
  const atServer = opts.hooks === "server";
  const HOOKS = (atServer ? "" : LUA_HOOKS) + PROXY;
  return `
include /etc/nginx/modules-enabled/*.conf;
worker_processes ${opts.workers ?? 2};
${opts.mainDirectives ?? ""}
error_log /var/log/nginx/error.log notice;
pid /run/nginx.pid;

events {
    worker_connections 16384;
}

http {
    access_log off;
    ${opts.resolver ? `resolver ${opts.resolver} valid=1s ipv6=off;` : ""}
    lua_package_path "${LUA_PACKAGE_PATH}";
    ${opts.bare ? "" : `include ${CONF_INCLUDE};`}
    lua_shared_dict backend 32m;
    ${opts.httpDirectives ?? ""}

    ${opts.bare ? "" : `init_by_lua_block        { require("intermission").setup(${setup}) }`}
    init_worker_by_lua_block { require("intermission").init_worker() }

    upstream backend {
        server 127.0.0.1:8081;
        keepalive 256;
    }

    server {
        listen 8080 backlog=4096;
        ${atServer ? LUA_HOOKS : ""}
        ${opts.serverDirectives ?? ""}

        location / {
            ${opts.frontDirectives ?? ""}
            ${HOOKS}
        }
        location /other/ {
            set $intermission_scope other;
            ${HOOKS}
        }
        location /seed/ {
            set $app_name seedapp;
            ${HOOKS}
        }
        location /short/ {
            set $intermission_max_time 1;
            ${HOOKS}
        }
        location /_intermission/ {
            content_by_lua_block { require("intermission").control() }
        }
        location /_intermission_other/ {
            set $intermission_scope other;
            content_by_lua_block { require("intermission").control() }
        }
        location = /control {
            content_by_lua_block { require("intermission").control() }
        }
        ${opts.extraLocations ?? ""}
    }
${BACKEND}
}
`;
}

/**
 * A second nginx for a node's container (NodeOptions.files, target APP_CONF), on :8082 in
 * front of the recording backend: an application the tests start and stop.
 */
export const APP_CONF = "/etc/intermission/app.conf";
export const PROXY_APP = `
include /etc/nginx/modules-enabled/*.conf;
worker_processes 1;
pid /run/app.pid;
error_log /var/log/nginx/app-error.log;
events {}
http {
    access_log off;
    server {
        listen 127.0.0.1:8082;
        location / { proxy_pass http://127.0.0.1:8081; }
    }
}`;

/**
 * Stops PROXY_APP (if it runs) and returns once its master has exited. `nginx -s stop`
 * only signals: until the master is gone its listening socket still accepts, and a probe
 * or a retry that connects in that moment is reset (nginx logs the reset at [error]), so
 * a test that wants "nothing listens" must wait for the pid file to go.
 */
export const STOP_PROXY_APP = ["sh", "-c", `nginx -c ${APP_CONF} -s stop 2>/dev/null; while [ -e /run/app.pid ]; do sleep 0.01; done; true`];
