-- A LuaRocks config for Debian/Ubuntu hosts whose lua-resty-redis and
-- lua-resty-redis-connector come from apt (lua-nginx-redis, lua-nginx-redis-connector):
-- it tells LuaRocks those rocks are already provided, so the intermission-fleet and
-- intermission-sentinel rocks install without fetching a second copy.
--   LUAROCKS_CONFIG=rocks/debian-provided.lua luarocks make rocks/intermission-fleet-*.rockspec
-- (Debian installs them as nginx.redis*: link them as resty.redis*, see the README.)
rocks_provided = {
   ["lua-resty-redis"] = "0.27-1",
   ["lua-resty-redis-connector"] = "0.06-1",
}
