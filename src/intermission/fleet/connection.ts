// Redis connections for fleet mode, in the manner of lua-resty-redis: a fresh cosocket
// object per use (never kept in module state), timeouts on every call, AUTH and SELECT
// on new connections only, and back to the keepalive pool when done.
import * as redis from "resty.redis";
import type * as Connector from "resty.redis.connector";
import { settings } from "../settings";

type Redis = RestyRedis;

let connectorModule: typeof Connector | undefined;

/** Through Redis Sentinel: the connector asks the sentinels for the current master. */
function connectViaSentinel(): LuaMultiReturn<[Redis | undefined, string | undefined]> {
  const cfg = settings.cfg.redis!;
  if (connectorModule === undefined) {
    const [ok, mod] = pcall(require, "resty.redis.connector");
    if (!ok) return $multi(undefined, "redis sentinels need lua-resty-redis-connector (resty.redis.connector)");
    connectorModule = mod as typeof Connector;
  }
  const [rc, err] = connectorModule.new({
    connect_timeout: cfg.connect_timeout * 1000,
    read_timeout: cfg.read_timeout * 1000,
    keepalive_timeout: cfg.keepalive_timeout * 1000,
    keepalive_poolsize: cfg.pool_size,
  });
  if (rc === undefined) return $multi(undefined, `redis connector: ${err}`);
  const [red, connErr] = rc.connect({
    sentinels: cfg.sentinels!, master_name: cfg.master_name, role: "master", db: cfg.database,
    password: cfg.password ?? "",
  });
  if (red === undefined) return $multi(undefined, `redis via sentinel (master ${cfg.master_name}): ${connErr ?? "no master known"}`);
  // connector 0.06 calls r:set_timeout(self, ms), which leaves nginx's 60 s default.
  red.set_timeout(cfg.read_timeout * 1000);
  return $multi(red, undefined);
}

/** A ready connection, or (nil, err). */
export function connect(): LuaMultiReturn<[Redis | undefined, string | undefined]> {
  const cfg = settings.cfg.redis!;
  if (cfg.sentinels !== undefined) return connectViaSentinel();
  const [red, newErr] = redis.new();
  if (red === undefined) return $multi(undefined, `redis: ${newErr}`);
  red.set_timeout(cfg.connect_timeout * 1000);
  const [ok, err] = red.connect(cfg.host, cfg.port, { pool_size: cfg.pool_size });
  if (ok === undefined) return $multi(undefined, `redis ${cfg.host}:${cfg.port}: ${err}`);
  red.set_timeout(cfg.read_timeout * 1000);

  const [reused] = red.get_reused_times();
  if (reused === 0) {
    if (cfg.password !== undefined) {
      const [authed, authErr] = cfg.username !== undefined ? red.auth(cfg.username, cfg.password) : red.auth(cfg.password);
      if (authed === undefined || authed === false) {
        red.close();
        return $multi(undefined, `redis AUTH: ${authErr}`);
      }
    }
    if (cfg.database !== 0) {
      const [selected, selErr] = red.select(cfg.database);
      if (selected === undefined || selected === false) {
        red.close();
        return $multi(undefined, `redis SELECT ${cfg.database}: ${selErr}`);
      }
    }
  }
  return $multi(red, undefined);
}

/** Returns a healthy connection to the pool. */
export function release(red: Redis): void {
  const cfg = settings.cfg.redis!;
  const [ok] = red.set_keepalive(cfg.keepalive_timeout * 1000, cfg.pool_size);
  if (ok === undefined) red.close();
}

/**
 * Whether a command failed, settling the connection: nil means the connection broke
 * (close it), false that Redis answered with an error (the connection is still good).
 */
export function failed(red: Redis, reply: unknown): boolean {
  if (reply === undefined) {
    red.close();
    return true;
  }
  if (reply === false) {
    release(red);
    return true;
  }
  return false;
}

export function key(...parts: string[]): string {
  return `${settings.cfg.redis!.prefix}:${parts.join(":")}`;
}

export type { Redis };
