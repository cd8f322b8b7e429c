#!/usr/bin/env bash
# npm run bench: installs what the benchmark runs on (Debian's nginx with
# lua-nginx-module, wrk, valgrind, Redis), builds dist/, and runs bench/run.ts on the host
# (its database section in Docker containers). Every section stores its figures in
# bench/results/<section>.json and the README's tables are rewritten from them; commit
# both. Run it on a quiet machine: wall-clock figures move with other load. The knobs
# (BENCH_ONLY, sizes, rounds, durations) are listed at the top of bench/run.ts.
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] || need+=(libnginx-mod-http-lua)
[ -f /usr/share/lua/5.1/resty/core.lua ] || need+=(lua-resty-core)
[ -f /usr/lib/x86_64-linux-gnu/lua/5.1/cjson.so ] || need+=(lua-cjson)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -f /usr/share/lua/5.1/nginx/redis.lua ] || need+=(lua-nginx-redis)
if [ ${#need[@]} -gt 0 ]; then
  echo "[bench] installing ${need[*]}"
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# lua-resty-redis as resty.redis (Debian names it nginx.redis), after any install above.
[ -e /usr/share/lua/5.1/resty/redis.lua ] || as_root ln -s ../nginx/redis.lua /usr/share/lua/5.1/resty/redis.lua
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
# The database section runs in containers (PostgreSQL, the app, nginx): Docker and the images.
if [ -z "${BENCH_ONLY:-}" ] || [[ ",$BENCH_ONLY," == *,database,* ]]; then
  bash scripts/docker-bootstrap.sh
  export TESTCONTAINERS_RYUK_DISABLED=true
fi
npm run -s build
node --import tsx bench/run.ts "$@"
echo "[bench] all: $((SECONDS / 60)) min $((SECONDS % 60)) s (setup and build included)"
