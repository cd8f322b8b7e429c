// Redis connections for fleet mode, in the manner of lua-resty-redis: a fresh cosocket
// object per use (never kept in module state), timeouts on every call, AUTH and SELECT
// on new connections only, and back to the keepalive pool when done.
import * as redis from "resty.redis";
import { settings } from "../settings";

type Redis = ReturnType<typeof redis.new>[0] & object;

/** A ready connection, or (nil, err). */
export function connect(): LuaMultiReturn<[Redis | undefined, string | undefined]> {
  const cfg = settings.cfg.redis!;
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

export function key(...parts: string[]): string {
  return `${settings.cfg.redis!.prefix}:${parts.join(":")}`;
}

export type { Redis };
