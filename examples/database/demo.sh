#!/usr/bin/env bash
# The real-database part of `npm run demo`: 8 clients write to PostgreSQL through the
# demo application while the database restarts (pg_ctl restart -m fast), twice: once
# on its own, once inside `intermission run`. Expects the demo stack (docker-compose:
# postgres, app, intermission-db on 127.0.0.1:8090).
set -euo pipefail
cd "$(dirname "$0")/../.."
FRONT="${FRONT:-http://127.0.0.1:8090}"
: "${PRIMARY:?PRIMARY names the postgres container}"
export PRIMARY
out=$(mktemp /tmp/intermission-db-load.XXXXXX)   # each load's report; removed on exit
trap 'rm -f "$out"' EXIT

for _ in $(seq 1 100); do
  curl -fsS -o /dev/null "$FRONT/write?id=demo-warmup" 2>/dev/null && break
  sleep 0.2
done
curl -fsS -o /dev/null "$FRONT/write?id=demo-warmup" || { echo "[db-demo] the application does not answer at $FRONT"; exit 1; }

# One restart under load; $@ is how the restart is run. Prints the load line, sets $failed.
restart_under_load() {
  node examples/load.mjs "$FRONT/write?id={id}" 8 600 > "$out" &
  local load=$!
  sleep 2   # traffic flowing before the restart
  "$@"
  sleep 2   # and after it
  kill -INT "$load"
  wait "$load" || true
  cat "$out"
  failed=$(sed -n 's/^load: [0-9]* ok, \([0-9]*\) failed.*/\1/p' "$out")
  [ -n "$failed" ] || { echo "[db-demo] no load result"; exit 1; }
}

echo
echo "database restart without intermission: pg_ctl restart -m fast"
restart_under_load bash examples/database/restart-primary.sh
without=$failed

echo
echo "database restart inside intermission run"
restart_under_load node bin/intermission.js --url "$FRONT/_intermission" run --reason "restart postgres" -- \
  bash examples/database/restart-primary.sh
with=$failed

echo
echo "without intermission: $without failed requests; with intermission: $with"
[ "$with" -eq 0 ]
