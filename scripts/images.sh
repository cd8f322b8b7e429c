#!/usr/bin/env bash
# Builds the images the tests and the demo run: intermission (this repo's Dockerfile;
# INTERMISSION_IMAGE names it, default intermission:latest), the same with intermission
# installed by LuaRocks (<name>-luarocks), intermission-redis (redis:7 when a registry
# answers, else built from Debian), and for the real-database tests and the demo
# intermission-postgres (PostgreSQL 15) and intermission-app (the application and the
# floating endpoint), both from Debian's packages. Docker's layer cache makes a second
# run take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[images] %s\n' "$*"; }

image="${INTERMISSION_IMAGE:-intermission:latest}"
say "building $image"
docker build -q -t "$image" . >/dev/null

# The same image with intermission installed by `luarocks make` instead (tag kept:
# intermission:latest -> intermission-luarocks:latest; test/harness/install.ts agrees).
# Only the tests use it: `images.sh --no-luarocks` (the demo) skips it.
if [ "${1:-}" != "--no-luarocks" ]; then
  name="${image%:*}"; tag="${image#"$name"}"
  [[ "$tag" == */* ]] && { name="$image"; tag=""; }   # a registry port, not a tag
  rocks="${name}-luarocks${tag}"
  say "building $rocks"
  docker build -q -t "$rocks" --build-arg "BASE=$image" -f test/docker/luarocks.Dockerfile . >/dev/null
fi

if docker image inspect intermission-redis:latest >/dev/null 2>&1; then
  say "intermission-redis:latest present"
elif timeout 60 docker pull -q redis:7 >/dev/null 2>&1; then
  docker tag redis:7 intermission-redis:latest
  say "pulled redis:7 as intermission-redis:latest"
else
  say "cannot pull redis:7: building intermission-redis:latest from Debian's redis-server"
  docker build -q -t intermission-redis:latest -f test/docker/redis.Dockerfile test/docker >/dev/null
fi
say "building intermission-postgres:latest"
docker build -q -t intermission-postgres:latest -f test/docker/postgres.Dockerfile test/docker/postgres >/dev/null
# The application's one dependency (pg) comes from its lock file, installed here so the
# image needs no npm of its own.
app=test/docker/app
if [ ! -d "$app/node_modules" ] || [ "$app/package-lock.json" -nt "$app/node_modules/.package-lock.json" ]; then
  say "npm ci in $app"
  npm ci --prefix "$app" --omit=dev --no-audit --no-fund --loglevel=error
fi
say "building intermission-app:latest"
docker build -q -t intermission-app:latest -f test/docker/app.Dockerfile "$app" >/dev/null
say "ready"
