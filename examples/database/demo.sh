#!/usr/bin/env bash
# The real-database part of `npm run demo`: 8 clients write to PostgreSQL through the
# demo application while the database restarts (pg_ctl restart -m fast), twice: once
# on its own, once inside `intermission run` (a planned outage). Then an unplanned one:
# the application is restarted (systemctl restart-style: stopped, started, not listening
# yet when the restart returns) and nobody pauses, twice: through plain nginx (what
# outage_hold = 0 gives) and through intermission (outage_hold at its default, 10 s).
# Expects the demo stack (docker-compose: postgres, app, intermission-db on
# 127.0.0.1:8090 and plain nginx on 127.0.0.1:8092). The last two lines are the
# verdicts (scripts/demo.sh prints them at the very end).
set -euo pipefail
cd "$(dirname "$0")/../.."
FRONT="${FRONT:-http://127.0.0.1:8090}"
PLAIN="${PLAIN:-http://127.0.0.1:8092}"
: "${PRIMARY:?PRIMARY names the postgres container}"
: "${APP:?APP names the application container}"
: "${FRONT_CONTAINER:?FRONT_CONTAINER names the intermission-db container}"
export PRIMARY APP
out=$(mktemp /tmp/intermission-db-load.XXXXXX)   # each load's report; removed on exit
trap 'rm -f "$out"' EXIT

for _ in $(seq 1 100); do
  curl -fsS -o /dev/null "$FRONT/write?id=demo-warmup" 2>/dev/null && break
  sleep 0.2
done
curl -fsS -o /dev/null "$FRONT/write?id=demo-warmup" || { echo "[db-demo] the application does not answer at $FRONT"; exit 1; }

# One restart under load through $url (default: the intermission front); $@ is how the
# restart is run. Prints the load line, sets $failed.
url=$FRONT
restart_under_load() {
  node examples/load.mjs "$url/write?id={id}" 8 600 > "$out" &
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

# Unplanned: nobody pauses. The application takes about a second to boot (APP_BOOT_MS).
echo
echo "unplanned: the application restarted, nobody pausing, through plain nginx (outage_hold = 0)"
url=$PLAIN
restart_under_load bash examples/database/restart-app.sh
unplanned_without=$failed

echo
echo "unplanned: the application restarted, nobody pausing, through intermission (outage_hold = 10 s, the default)"
url=$FRONT
# A request nginx had already written to the stopping application (into a keep-alive
# connection it closed, or its listen queue when it stopped listening) is not sent again:
# nginx cannot tell whether the application read it (README, "Not held"). nginx logs each.
# (The container's error log is its stderr: read through docker logs.)
cut_lines() {
  docker logs "$FRONT_CONTAINER" 2>&1 | grep -cE 'recv\(\) failed \(104: Connection reset by peer\) while reading response header from upstream|upstream prematurely closed connection while reading response header from upstream' || true
}
cut_before=$(cut_lines)
restart_under_load bash examples/database/restart-app.sh
cut=$(( $(cut_lines) - ${cut_before:-0} ))
unplanned_with=$(( failed > cut ? failed - cut : 0 ))
cut_note=""
[ "$cut" -gt 0 ] && cut_note=" (and $(( failed - unplanned_with )) cut after nginx had written them to the stopping application: not held, see the README's \"Not held\")"

echo
echo "without intermission: $without failed requests; with intermission: $with"
echo "unplanned app restart, nobody pausing: without outage_hold: $unplanned_without failed requests; with outage_hold: $unplanned_with$cut_note"
[ "$with" -eq 0 ] && [ "$unplanned_with" -eq 0 ]
