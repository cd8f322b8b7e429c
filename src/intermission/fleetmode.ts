// Fleet mode's modules, loaded by setup() only when store = "redis": local mode must run
// without lua-resty-redis on the path (the README promises it has no dependency).
import type * as Sync from "./fleet/sync";
import type * as Remote from "./fleet/remote";

export const fleet: { sync?: typeof Sync; remote?: typeof Remote } = {};

/** Loads the fleet modules, or says which library is missing and where to get it. */
export function loadFleet(): LuaMultiReturn<[boolean, string | undefined]> {
  const [ok, sync] = pcall(require, "intermission.fleet.sync");
  if (!ok) {
    const err = tostring(sync);
    const [missing] = string.match(err, "module '([^']+)' not found");
    if (missing === "resty.redis") {
      return $multi(false, `store = "redis" needs lua-resty-redis as "resty.redis" (OpenResty ships it; on Debian install lua-nginx-redis and link it as resty/redis.lua, see the README): ${err}`);
    }
    return $multi(false, `cannot load fleet mode: ${err}`);
  }
  fleet.sync = sync as typeof Sync;
  fleet.remote = require("intermission.fleet.remote") as typeof Remote;
  return $multi(true, undefined);
}
