#!/usr/bin/env bash
# Builds the images the tests and the demo run: intermission (this repo's Dockerfile;
# INTERMISSION_IMAGE names it, default intermission:latest), the same with intermission
# installed by LuaRocks (<name>-luarocks), intermission-redis (redis:7 when a registry
# answers, else built from Debian), and for the real-database tests and the demo
# intermission-postgres (PostgreSQL 15) and intermission-app (the application and the
# floating endpoint), both from Debian's packages, and intermission-rack (a Rack
# application on Debian's Ruby, for the tests only). Docker's layer cache makes a second
# run take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[images] %s\n' "$*"; }

# docker build, quiet, timed. A client newer than Debian's docker.io (23+) without the
# buildx component (bookworm has no docker-buildx package) builds with the legacy builder
# and prints a DEPRECATED notice on every build: said once here, in our words, and cut
# from the output; anything else docker says goes through.
legacy_said=0
build() {
  local what=$1 err status=0 start
  shift
  err=$(mktemp /tmp/intermission-images-err.XXXXXX)
  start=$(date +%s)
  say "building $what (from scratch a minute or more, cached a few seconds)"
  docker build -q -t "$what" "$@" >/dev/null 2>"$err" || status=$?
  if grep -q '^DEPRECATED: The legacy builder is deprecated' "$err"; then
    if [ "$legacy_said" -eq 0 ]; then
      say "note: docker builds with its legacy builder here (no buildx component); its DEPRECATED notice is left out"
      legacy_said=1
    fi
  fi
  # The notice: its first line, the indented lines under it, and the blank line after.
  awk '/^DEPRECATED: The legacy builder is deprecated/ {cut = 1; next}
       cut && /^[ \t]+[^ \t]/ {next}
       cut && /^[ \t]*$/ {cut = 0; next}
       {cut = 0; print}' "$err" >&2
  rm -f "$err"
  [ "$status" -eq 0 ] || { say "building $what failed (docker build exit $status)"; return "$status"; }
  say "built $what in $(( $(date +%s) - start ))s"
}

image="${INTERMISSION_IMAGE:-intermission:latest}"
build "$image" .

# The same image with intermission installed by `luarocks make` instead (tag kept:
# intermission:latest -> intermission-luarocks:latest; test/harness/install.ts agrees).
# Only the tests use it: `images.sh --no-luarocks` (the demo) skips it.
if [ "${1:-}" != "--no-luarocks" ]; then
  name="${image%:*}"; tag="${image#"$name"}"
  [[ "$tag" == */* ]] && { name="$image"; tag=""; }   # a registry port, not a tag
  rocks="${name}-luarocks${tag}"
  build "$rocks" --build-arg "BASE=$image" -f test/docker/luarocks.Dockerfile .
fi

if docker image inspect intermission-redis:latest >/dev/null 2>&1; then
  say "intermission-redis:latest present"
elif timeout 60 docker pull -q redis:7 >/dev/null 2>&1; then
  docker tag redis:7 intermission-redis:latest
  say "pulled redis:7 as intermission-redis:latest"
else
  say "cannot pull redis:7: building intermission-redis:latest from Debian's redis-server"
  build intermission-redis:latest -f test/docker/redis.Dockerfile test/docker
fi
build intermission-postgres:latest -f test/docker/postgres.Dockerfile test/docker/postgres
# The application's one dependency (pg) comes from its lock file, installed here so the
# image needs no npm of its own.
app=test/docker/app
if [ ! -d "$app/node_modules" ] || [ "$app/package-lock.json" -nt "$app/node_modules/.package-lock.json" ]; then
  say "npm ci in $app (its one dependency, pg; quiet, a few seconds)"
  npm ci --prefix "$app" --omit=dev --no-audit --no-fund --loglevel=error
fi
# Its /write-na route runs the README's "not applied" middleware: the shipped file itself,
# copied beside it (not a second copy in git: test/docker/app/not-applied.mjs is ignored).
cp examples/not-applied.mjs "$app/not-applied.mjs"
build "${INTERMISSION_APP_IMAGE:-intermission-app:latest}" -f test/docker/app.Dockerfile "$app"
# A Rack application (Debian's Ruby) for the "not applied" middleware's test. Only the
# tests use it: `images.sh --no-luarocks` (the demo) skips it.
if [ "${1:-}" != "--no-luarocks" ]; then
  build intermission-rack:latest -f test/docker/rack.Dockerfile test/docker
fi
say "ready"
