// Declarations for the parts of the ngx API that intermission uses, exact to
// lua-nginx-module 0.10.23 with lua-resty-core 0.1.25 (the versions we run).
// Rules: a value nginx may not have is `T | undefined` (Lua nil); ngx.null is its own
// type; functions called with a dot take `this: void`, methods called with a colon
// take `this: T`. Errors come back as values: `LuaMultiReturn<[T | undefined, string?]>`.

/** ngx.null / cjson.null: a light userdata, truthy in Lua. Compare explicitly. */
declare const enum NgxNullBrand {}
type NgxNull = NgxNullBrand & { readonly __ngxNull: unique symbol };

/** A lua_shared_dict zone (lua-resty-core shdict.lua). */
interface NgxSharedDict {
  /** value, flags | nil, err. A missing key is (nil) with no err. */
  get(this: NgxSharedDict, key: string): LuaMultiReturn<[string | number | boolean | undefined, number | string | undefined]>;
  /** ok, err, forcible. exptime in seconds, 0 = never. */
  set(this: NgxSharedDict, key: string, value: string | number | boolean | undefined, exptime?: number, flags?: number): LuaMultiReturn<[boolean, string | undefined, boolean]>;
  /** Like set, but never evicts other items to make room. */
  safe_set(this: NgxSharedDict, key: string, value: string | number | boolean | undefined, exptime?: number, flags?: number): LuaMultiReturn<[boolean, string | undefined]>;
  /** Sets only if the key is absent: false, "exists" otherwise. Atomic. */
  add(this: NgxSharedDict, key: string, value: string | number | boolean, exptime?: number, flags?: number): LuaMultiReturn<[boolean, string | undefined, boolean]>;
  /** add that never evicts. */
  safe_add(this: NgxSharedDict, key: string, value: string | number | boolean, exptime?: number, flags?: number): LuaMultiReturn<[boolean, string | undefined]>;
  /**
   * newval, err, forcible. Without `init` a missing key is (nil, "not found").
   * `init_ttl` applies only when `init` creates the key.
   */
  incr(this: NgxSharedDict, key: string, value: number, init?: number, init_ttl?: number): LuaMultiReturn<[number | undefined, string | undefined, boolean | undefined]>;
  delete(this: NgxSharedDict, key: string): void;
  /** ttl in seconds (0 = never expires) | nil, "not found". */
  ttl(this: NgxSharedDict, key: string): LuaMultiReturn<[number | undefined, string | undefined]>;
  expire(this: NgxSharedDict, key: string, exptime: number): LuaMultiReturn<[boolean | undefined, string | undefined]>;
  /** Locks the whole zone while it runs; for the control path only. max_count 0 = all. */
  get_keys(this: NgxSharedDict, max_count?: number): string[];
  flush_all(this: NgxSharedDict): void;
  capacity(this: NgxSharedDict): number;
  free_space(this: NgxSharedDict): number;
}

/** ngx.semaphore instance (lua-resty-core). */
interface NgxSemaphore {
  /** Wakes up to n (default 1) waiters, or banks the resources. Usable in every phase. */
  post(this: NgxSemaphore, n?: number): void;
  /** true | false, "timeout". Yields: not in log, header_filter or body_filter phases. */
  wait(this: NgxSemaphore, timeout: number): LuaMultiReturn<[boolean, string | undefined]>;
  /** Resources available (positive) or threads waiting (negative). */
  count(this: NgxSemaphore): number;
}

type NgxPhase =
  | "init" | "init_worker" | "ssl_cert" | "ssl_session_fetch" | "ssl_session_store" | "ssl_client_hello"
  | "set" | "rewrite" | "balancer" | "access" | "content" | "header_filter" | "body_filter"
  | "log" | "timer" | "exit_worker";

interface NgxReq {
  get_method(this: void): string;
  /** args, err ("truncated" when over max_args; the args are still returned). */
  get_uri_args(this: void, max_args?: number): LuaMultiReturn<[NgxArgs, string | undefined]>;
  /** Needs read_body() first. args | nil, err */
  get_post_args(this: void, max_args?: number): LuaMultiReturn<[NgxArgs | undefined, string | undefined]>;
  /** Keys are lower-cased unless raw. */
  get_headers(this: void, max_headers?: number, raw?: boolean): LuaMultiReturn<[{ [name: string]: string | string[] | undefined }, string | undefined]>;
  read_body(this: void): void;
  /** nil when the body was not read, is empty, or was buffered to a file. */
  get_body_data(this: void): string | undefined;
  get_body_file(this: void): string | undefined;
  is_internal(this: void): boolean;
  start_time(this: void): number;
}

/** Values of query or form arguments: a flag without "=" is true; a repeated name is a list. */
type NgxArgs = { [name: string]: string | boolean | (string | boolean)[] | undefined };

/** A cosocket (ngx.socket.tcp): never kept in module state. */
interface NgxTcpSocket {
  /** 1 | nil, err. A host name needs nginx's `resolver`. */
  connect(this: NgxTcpSocket, host: string, port: number): LuaMultiReturn<[1 | undefined, string | undefined]>;
  /** A unix domain socket: "unix:/path/to.sock". */
  connect(this: NgxTcpSocket, unixPath: string): LuaMultiReturn<[1 | undefined, string | undefined]>;
  /** bytes sent | nil, err */
  send(this: NgxTcpSocket, data: string): LuaMultiReturn<[number | undefined, string | undefined]>;
  /** data | nil, err, partial. "*l": a line without its CR LF. */
  receive(this: NgxTcpSocket, pattern: "*l" | "*a" | number): LuaMultiReturn<[string | undefined, string | undefined, string | undefined]>;
  /** Milliseconds for the next connect, send and receive. */
  settimeout(this: NgxTcpSocket, ms: number): void;
  close(this: NgxTcpSocket): LuaMultiReturn<[1 | undefined, string | undefined]>;
}

interface NgxSocket {
  tcp(this: void): NgxTcpSocket;
}

interface NgxTimer {
  /** true | nil, err ("process exiting", "too many pending timers"). */
  at<A extends unknown[]>(this: void, delay: number, callback: (this: void, premature: boolean, ...args: A) => void, ...args: A): LuaMultiReturn<[true | undefined, string | undefined]>;
  every<A extends unknown[]>(this: void, delay: number, callback: (this: void, premature: boolean, ...args: A) => void, ...args: A): LuaMultiReturn<[true | undefined, string | undefined]>;
  running_count(this: void): number;
  pending_count(this: void): number;
}

interface NgxWorker {
  /** 0-based worker index; nil outside worker processes (init phase, master). */
  id(this: void): number | undefined;
  count(this: void): number;
  pid(this: void): number;
  /** true once this worker is shutting down (reload, quit). */
  exiting(this: void): boolean;
}

interface NgxRe {
  /** from, to | nil, nil | nil, nil, err */
  find(this: void, subject: string, regex: string, options?: string): LuaMultiReturn<[number | undefined, number | undefined, string | undefined]>;
}

interface NgxConfig {
  readonly subsystem: "http" | "stream";
  readonly ngx_lua_version: number;
  readonly nginx_version: number;
  readonly debug: boolean;
  prefix(this: void): string;
  /** The ./configure arguments nginx was built with. */
  nginx_configure(this: void): string;
}

interface Ngx {
  /** ngx.null: a light userdata, truthy in Lua. */
  readonly null: NgxNull;

  readonly OK: 0;
  readonly ERROR: -1;
  readonly HTTP_OK: 200;
  readonly HTTP_BAD_REQUEST: 400;
  readonly HTTP_UNAUTHORIZED: 401;
  readonly HTTP_NOT_FOUND: 404;
  readonly HTTP_NOT_ALLOWED: 405;
  readonly HTTP_INTERNAL_SERVER_ERROR: 500;
  readonly HTTP_SERVICE_UNAVAILABLE: 503;

  readonly STDERR: 0;
  readonly EMERG: 1;
  readonly ALERT: 2;
  readonly CRIT: 3;
  readonly ERR: 4;
  readonly WARN: 5;
  readonly NOTICE: 6;
  readonly INFO: 7;
  readonly DEBUG: 8;

  /** Request variables: a string, or nil when unset or not defined. Each read is costly. */
  readonly var: { [name: string]: string | undefined };
  /** Response headers; assigning nil removes one. */
  readonly header: { [name: string]: string | number | string[] | undefined };
  /** Per-request Lua table (lost on internal redirects). Reading it creates it. */
  readonly ctx: { [key: string]: unknown };
  readonly shared: { [zone: string]: NgxSharedDict | undefined };
  /** The response status; 0 before one is set. */
  status: number;

  readonly config: NgxConfig;
  readonly req: NgxReq;
  readonly timer: NgxTimer;
  readonly worker: NgxWorker;
  readonly re: NgxRe;
  readonly socket: NgxSocket;

  log(this: void, level: number, ...args: (string | number | boolean | undefined)[]): void;
  /** 1 | nil, err */
  say(this: void, ...args: (string | number)[]): LuaMultiReturn<[1 | undefined, string | undefined]>;
  print(this: void, ...args: (string | number)[]): LuaMultiReturn<[1 | undefined, string | undefined]>;
  /** Internal redirect to `uri` (method and body kept); ends the current handler. */
  exec(this: void, uri: string, args?: string | { [name: string]: string }): never;
  /** Ends the request. Status >= 200 finalizes it with that status. */
  exit(this: void, status: number): never;
  /** Seconds since the epoch, millisecond precision, from nginx's cached clock. */
  now(this: void): number;
  update_time(this: void): void;
  sleep(this: void, seconds: number): void;
  /** The SHA-1 digest (20 raw bytes) of a string. */
  sha1_bin(this: void, s: string): string;
  get_phase(this: void): NgxPhase;
  /** Needs lua_check_client_abort on. 1 | nil, err */
  on_abort(this: void, callback: (this: void) => void): LuaMultiReturn<[1 | undefined, string | undefined]>;
}

declare const ngx: Ngx;

declare module "ngx.semaphore" {
  interface SemaphoreModule {
    /** sema | nil, err */
    new: (this: void, n?: number) => LuaMultiReturn<[NgxSemaphore | undefined, string | undefined]>;
  }
  const semaphore: SemaphoreModule;
  export = semaphore;
}
