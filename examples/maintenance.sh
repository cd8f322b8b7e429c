#!/usr/bin/env bash
# A simulated maintenance against the demo stack: steady traffic from a load loop,
# `intermission run -- sleep 5` in the middle of it, and zero failed requests at the end.
# The requests that arrive during the 5 seconds are held, then released in order.
set -euo pipefail
cd "$(dirname "$0")/.."
FRONT="${FRONT:-http://127.0.0.1:8080/}"
CONTROL="${CONTROL:-http://127.0.0.1:8080/_intermission}"

out=$(mktemp /tmp/intermission-load.XXXXXX)   # the load's report; removed on exit
trap 'rm -f "$out"' EXIT
node examples/load.mjs "$FRONT" 8 600 > "$out" &
load=$!
sleep 2   # traffic flowing before the maintenance starts

echo "maintenance: intermission run -- sleep 5"
node bin/intermission.js --url "$CONTROL" run --reason "demo maintenance" -- sleep 5
status=$?

sleep 2   # traffic flowing again after it
kill -INT "$load"
wait "$load" && load_status=0 || load_status=$?
cat "$out"
if [ "$status" -ne 0 ] || [ "$load_status" -ne 0 ]; then
  echo "maintenance: FAILED (run exit $status, load exit $load_status)"
  exit 1
fi
echo "maintenance: done, zero failed requests"
