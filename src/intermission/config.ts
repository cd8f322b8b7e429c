// setup() options: defaults, validation, and the frozen config every worker inherits.
// setup() runs in init_by_lua (the master), so workers fork with the config in place;
// a bad option fails nginx start-up with a message that names it.

export type OnTimeout = "reject" | "pass";
export type StoreKind = "shared_dict" | "redis";

export interface RedisOptions {
  host: string;
  port: number;
  password?: string;
  username?: string;
  database: number;
  prefix: string;
  connect_timeout: number;
  read_timeout: number;
  pool_size: number;
  keepalive_timeout: number;
  /** Redis Sentinel: ask these for the current master of `master_name`. */
  sentinels?: { host: string; port: number }[];
  master_name: string;
}

export interface ReadyProbe {
  url: string;
  successes: number;
  interval: number;
  timeout: number;
}

export interface Config {
  store: StoreKind;
  redis?: RedisOptions;
  /** lua_shared_dict holding the state, counters and the queue. */
  dict: string;
  max_hold: number;
  on_timeout: OnTimeout;
  pause_ttl: number;
  max_held: number;
  release_window: number;
  health_check_paths: string[];
  privileged_user_agent?: string;
  control_token?: string;
  legacy_endpoints: boolean;
  retry_after: number;
  /** Scopes this node keeps state for; creating one more is refused (bounds the state zone). */
  max_scopes: number;
  /** Seconds a released request holds its window slot at most (its response may not have started). */
  release_lease: number;
  /** After a resume, hold until this answers 2xx `successes` times in a row (or `timeout`). */
  ready_probe?: ReadyProbe;
  /** Fleet mode: the release window of the whole fleet, shared by the live nodes. */
  fleet_release_window?: number;
  /** Upstream statuses that count as a gateway failure during a release (a set). */
  failure_statuses: { [status: number]: true };
  /** Seconds a request may be held through an unplanned outage (outage.ts); 0 = off. */
  outage_hold: number;
  /** How often a worker with held requests looks for changes made by other workers. */
  poll_interval: number;
  /**
   * Where the pauses in force are kept across a binary upgrade (persist.ts); false: not
   * kept; undefined: <nginx's client body temp path>/intermission.state.
   */
  state_file?: string | false;
}

/** The defaults, each justified in the README's option table. */
export function defaults(): Config {
  return {
    store: "shared_dict",
    dict: "intermission",
    max_hold: 30,
    on_timeout: "reject",
    pause_ttl: 120,
    max_held: 1000,
    release_window: 64,
    health_check_paths: ["/up"],
    legacy_endpoints: false,
    retry_after: 5,
    max_scopes: 1000,
    release_lease: 5,
    failure_statuses: { 502: true, 503: true, 504: true },
    poll_interval: 0.002,
    outage_hold: 10,
  };
}

const KNOWN_OPTIONS: { [name: string]: true } = {
  store: true, redis: true, dict: true, max_hold: true, on_timeout: true, pause_ttl: true,
  max_held: true, release_window: true, health_check_paths: true, privileged_user_agent: true,
  control_token: true, legacy_endpoints: true, retry_after: true, poll_interval: true,
  max_scopes: true, release_lease: true, failure_statuses: true, ready_probe: true, fleet_release_window: true,
  state_file: true,
  outage_hold: true,
};

const KNOWN_REDIS_OPTIONS: { [name: string]: true } = {
  host: true, port: true, password: true, username: true, database: true, prefix: true,
  connect_timeout: true, read_timeout: true, pool_size: true, keepalive_timeout: true,
  sentinels: true, master_name: true,
};

type Raw = { [name: string]: unknown };

function isNumber(v: unknown): v is number {
  // NaN is the only value not equal to itself; math.huge fails the bound checks.
  return type(v) === "number" && v === v;
}

function numberOption(raw: Raw, name: string, fallback: number, min: number, max: number, integer: boolean): LuaMultiReturn<[number | undefined, string | undefined]> {
  const v = raw[name];
  if (v === undefined) return $multi(fallback, undefined);
  if (!isNumber(v) || v < min || v > max || (integer && math.floor(v) !== v)) {
    const kind = integer ? "an integer" : "a number";
    return $multi(undefined, `option "${name}" must be ${kind} from ${min} to ${max}, got ${tostring(v)}`);
  }
  return $multi(v, undefined);
}

function stringOption(raw: Raw, name: string, allowed?: string[]): LuaMultiReturn<[string | undefined, string | undefined]> {
  const v = raw[name];
  if (v === undefined) return $multi(undefined, undefined);
  if (type(v) !== "string" || v === "") {
    return $multi(undefined, `option "${name}" must be a non-empty string, got ${tostring(v)}`);
  }
  if (allowed !== undefined) {
    for (const a of allowed) if (a === v) return $multi(v as string, undefined);
    return $multi(undefined, `option "${name}" must be one of ${table.concat(allowed, ", ")}, got "${v as string}"`);
  }
  return $multi(v as string, undefined);
}

function unknownKey(raw: Raw, known: { [name: string]: true }, what: string): string | undefined {
  for (const [k] of pairs(raw)) {
    if (type(k) !== "string" || known[k as string] === undefined) return `unknown ${what} "${tostring(k)}"`;
  }
  return undefined;
}

function redisOptions(v: unknown): LuaMultiReturn<[RedisOptions | undefined, string | undefined]> {
  if (type(v) !== "table") return $multi(undefined, `option "redis" must be a table like { host = "127.0.0.1", port = 6379 }`);
  const raw = v as Raw;
  const unknown = unknownKey(raw, KNOWN_REDIS_OPTIONS, "redis option");
  if (unknown !== undefined) return $multi(undefined, unknown);
  const [host, hostErr] = stringOption(raw, "host");
  if (hostErr !== undefined) return $multi(undefined, `redis ${hostErr}`);
  const [port, portErr] = numberOption(raw, "port", 6379, 1, 65535, true);
  if (portErr !== undefined) return $multi(undefined, `redis ${portErr}`);
  const [database, dbErr] = numberOption(raw, "database", 0, 0, 1024, true);
  if (dbErr !== undefined) return $multi(undefined, `redis ${dbErr}`);
  const [password, pwErr] = stringOption(raw, "password");
  if (pwErr !== undefined) return $multi(undefined, `redis ${pwErr}`);
  const [username, userErr] = stringOption(raw, "username");
  if (userErr !== undefined) return $multi(undefined, `redis ${userErr}`);
  const [prefix, prefixErr] = stringOption(raw, "prefix");
  if (prefixErr !== undefined) return $multi(undefined, `redis ${prefixErr}`);
  const [connectTimeout, ctErr] = numberOption(raw, "connect_timeout", 0.2, 0.001, 60, false);
  if (ctErr !== undefined) return $multi(undefined, `redis ${ctErr}`);
  const [readTimeout, rtErr] = numberOption(raw, "read_timeout", 1, 0.001, 60, false);
  if (rtErr !== undefined) return $multi(undefined, `redis ${rtErr}`);
  const [poolSize, psErr] = numberOption(raw, "pool_size", 16, 1, 10000, true);
  if (psErr !== undefined) return $multi(undefined, `redis ${psErr}`);
  const [keepalive, kaErr] = numberOption(raw, "keepalive_timeout", 60, 0, 3600, false);
  if (kaErr !== undefined) return $multi(undefined, `redis ${kaErr}`);
  const [masterName, mnErr] = stringOption(raw, "master_name");
  if (mnErr !== undefined) return $multi(undefined, `redis ${mnErr}`);
  let sentinels: { host: string; port: number }[] | undefined;
  if (raw.sentinels !== undefined) {
    const bad = `redis option "sentinels" must be a list like { { host = "10.0.0.1", port = 26379 } }`;
    if (type(raw.sentinels) !== "table") return $multi(undefined, bad);
    sentinels = [];
    for (const entry of raw.sentinels as unknown[]) {
      if (type(entry) !== "table") return $multi(undefined, bad);
      const e = entry as Raw;
      const [h, hErr] = stringOption(e, "host");
      const [pt, pErr] = numberOption(e, "port", 26379, 1, 65535, true);
      if (h === undefined || hErr !== undefined || pErr !== undefined) return $multi(undefined, bad);
      sentinels.push({ host: h, port: pt! });
    }
    if (sentinels.length === 0) return $multi(undefined, bad);
    if (raw.host !== undefined) return $multi(undefined, `redis options "host" and "sentinels" exclude each other`);
    if (username !== undefined) return $multi(undefined, `redis option "username" is not supported with "sentinels" (lua-resty-redis-connector 0.06 sends the password only)`);
  }
  return $multi({
    host: host ?? "127.0.0.1",
    port: port!,
    password,
    username,
    database: database!,
    prefix: prefix ?? "intermission",
    connect_timeout: connectTimeout!,
    read_timeout: readTimeout!,
    pool_size: poolSize!,
    keepalive_timeout: keepalive!,
    sentinels,
    master_name: masterName ?? "mymaster",
  }, undefined);
}

function pathList(v: unknown): LuaMultiReturn<[string[] | undefined, string | undefined]> {
  if (type(v) === "string") v = [v];
  if (type(v) !== "table") return $multi(undefined, `option "health_check_paths" must be a list of paths like { "/up" }`);
  const paths: string[] = [];
  for (const p of v as unknown[]) {
    if (type(p) !== "string" || string.sub(p as string, 1, 1) !== "/") {
      return $multi(undefined, `option "health_check_paths" must hold paths starting with "/", got ${tostring(p)}`);
    }
    paths.push(p as string);
  }
  return $multi(paths, undefined);
}

const KNOWN_PROBE_OPTIONS: { [name: string]: true } = { url: true, successes: true, interval: true, timeout: true };

function readyProbe(v: unknown): LuaMultiReturn<[ReadyProbe | undefined, string | undefined]> {
  if (type(v) !== "table") return $multi(undefined, `option "ready_probe" must be a table like { url = "http://127.0.0.1:3000/up" }`);
  const raw = v as Raw;
  const unknown = unknownKey(raw, KNOWN_PROBE_OPTIONS, "ready_probe option");
  if (unknown !== undefined) return $multi(undefined, unknown);
  const [url, urlErr] = stringOption(raw, "url");
  if (urlErr !== undefined) return $multi(undefined, `ready_probe ${urlErr}`);
  if (url === undefined || string.match(url, "^http://[^:/]+:?%d*/?")[0] === undefined) {
    return $multi(undefined, `ready_probe option "url" must be like "http://10.0.0.5:3000/up" (plain http; a host name needs nginx's resolver), got ${tostring(url)}`);
  }
  const [successes, e1] = numberOption(raw, "successes", 1, 1, 100, true);
  if (e1 !== undefined) return $multi(undefined, `ready_probe ${e1}`);
  const [interval, e2] = numberOption(raw, "interval", 0.2, 0.01, 60, false);
  if (e2 !== undefined) return $multi(undefined, `ready_probe ${e2}`);
  const [timeout, e3] = numberOption(raw, "timeout", 30, 0.1, 3600, false);
  if (e3 !== undefined) return $multi(undefined, `ready_probe ${e3}`);
  return $multi({ url, successes: successes!, interval: interval!, timeout: timeout! }, undefined);
}

function statusSet(v: unknown): LuaMultiReturn<[{ [status: number]: true } | undefined, string | undefined]> {
  const bad = `option "failure_statuses" must be a list of HTTP statuses from 500 to 599, like { 502, 503, 504 }`;
  if (type(v) !== "table") return $multi(undefined, bad);
  const out: { [status: number]: true } = {};
  for (const s of v as unknown[]) {
    if (!isNumber(s) || s < 500 || s > 599 || math.floor(s) !== s) return $multi(undefined, bad);
    out[s] = true;
  }
  return $multi(out, undefined);
}

/** Validates setup() options into a Config, or names the first bad option. */
export function parse(input: unknown): LuaMultiReturn<[Config | undefined, string | undefined]> {
  const cfg = defaults();
  if (input === undefined) return $multi(cfg, undefined);
  if (type(input) !== "table") return $multi(undefined, "setup() takes a table of options");
  const raw = input as Raw;

  const unknown = unknownKey(raw, KNOWN_OPTIONS, "option");
  if (unknown !== undefined) return $multi(undefined, unknown);

  const [store, storeErr] = stringOption(raw, "store", ["shared_dict", "redis"]);
  if (storeErr !== undefined) return $multi(undefined, storeErr);
  cfg.store = (store ?? "shared_dict") as StoreKind;
  if (cfg.store === "redis") {
    const [redis, redisErr] = redisOptions(raw.redis ?? {});
    if (redisErr !== undefined) return $multi(undefined, redisErr);
    cfg.redis = redis;
  } else if (raw.redis !== undefined) {
    return $multi(undefined, `option "redis" needs store = "redis"`);
  }

  const [dict, dictErr] = stringOption(raw, "dict");
  if (dictErr !== undefined) return $multi(undefined, dictErr);
  if (dict !== undefined) cfg.dict = dict;

  const [maxHold, e1] = numberOption(raw, "max_hold", cfg.max_hold, 0.001, 86400, false);
  if (e1 !== undefined) return $multi(undefined, e1);
  cfg.max_hold = maxHold!;

  const [onTimeout, e2] = stringOption(raw, "on_timeout", ["reject", "pass"]);
  if (e2 !== undefined) return $multi(undefined, e2);
  if (onTimeout !== undefined) cfg.on_timeout = onTimeout as OnTimeout;

  const [pauseTtl, e3] = numberOption(raw, "pause_ttl", cfg.pause_ttl, 0, 86400 * 7, false);
  if (e3 !== undefined) return $multi(undefined, e3);
  cfg.pause_ttl = pauseTtl!;

  const [maxHeld, e4] = numberOption(raw, "max_held", cfg.max_held, 1, 1000000, true);
  if (e4 !== undefined) return $multi(undefined, e4);
  cfg.max_held = maxHeld!;

  const [window, e5] = numberOption(raw, "release_window", cfg.release_window, 1, 100000, true);
  if (e5 !== undefined) return $multi(undefined, e5);
  cfg.release_window = window!;

  if (raw.health_check_paths !== undefined) {
    const [paths, e6] = pathList(raw.health_check_paths);
    if (e6 !== undefined) return $multi(undefined, e6);
    cfg.health_check_paths = paths!;
  }

  const [ua, e7] = stringOption(raw, "privileged_user_agent");
  if (e7 !== undefined) return $multi(undefined, e7);
  if (ua !== undefined) {
    const [, , reErr] = ngx.re.find("", ua, "jo");
    if (reErr !== undefined) return $multi(undefined, `option "privileged_user_agent" is not a valid regex: ${reErr}`);
  }
  cfg.privileged_user_agent = ua;

  const [token, e8] = stringOption(raw, "control_token");
  if (e8 !== undefined) return $multi(undefined, e8);
  if (token !== undefined && token.length < 16) {
    return $multi(undefined, `option "control_token" must be at least 16 characters`);
  }
  cfg.control_token = token;

  const legacy = raw.legacy_endpoints;
  if (legacy !== undefined && type(legacy) !== "boolean") {
    return $multi(undefined, `option "legacy_endpoints" must be true or false, got ${tostring(legacy)}`);
  }
  cfg.legacy_endpoints = legacy === true;

  const [retryAfter, e9] = numberOption(raw, "retry_after", cfg.retry_after, 0, 86400, true);
  if (e9 !== undefined) return $multi(undefined, e9);
  cfg.retry_after = retryAfter!;

  const [poll, e10] = numberOption(raw, "poll_interval", cfg.poll_interval, 0.001, 1, false);
  if (e10 !== undefined) return $multi(undefined, e10);
  cfg.poll_interval = poll!;

  const [maxScopes, e11] = numberOption(raw, "max_scopes", cfg.max_scopes, 1, 100000, true);
  if (e11 !== undefined) return $multi(undefined, e11);
  cfg.max_scopes = maxScopes!;

  const [lease, e12] = numberOption(raw, "release_lease", cfg.release_lease, 0.01, 3600, false);
  if (e12 !== undefined) return $multi(undefined, e12);
  cfg.release_lease = lease!;

  if (raw.ready_probe !== undefined) {
    const [probe, e14] = readyProbe(raw.ready_probe);
    if (e14 !== undefined) return $multi(undefined, e14);
    cfg.ready_probe = probe;
  }

  const [fleetWindow, e15] = numberOption(raw, "fleet_release_window", 0, 0, 1000000, true);
  if (e15 !== undefined) return $multi(undefined, e15);
  if (fleetWindow! > 0) {
    if (cfg.store !== "redis") return $multi(undefined, `option "fleet_release_window" needs store = "redis"`);
    cfg.fleet_release_window = fleetWindow;
  }

  const [outageHold, e16] = numberOption(raw, "outage_hold", cfg.outage_hold, 0, 86400, false);
  if (e16 !== undefined) return $multi(undefined, e16);
  cfg.outage_hold = outageHold!;

  if (raw.failure_statuses !== undefined) {
    const [statuses, e13] = statusSet(raw.failure_statuses);
    if (e13 !== undefined) return $multi(undefined, e13);
    cfg.failure_statuses = statuses!;
  }

  if (raw.state_file === false) {
    cfg.state_file = false;
  } else if (raw.state_file !== undefined) {
    const v = raw.state_file;
    if (type(v) !== "string" || string.sub(v as string, 1, 1) !== "/" || string.sub(v as string, -1) === "/") {
      return $multi(undefined, `option "state_file" must be an absolute file path like "/var/lib/nginx/body/intermission.state", or false, got ${tostring(v)}`);
    }
    cfg.state_file = v as string;
  }

  return $multi(cfg, undefined);
}
