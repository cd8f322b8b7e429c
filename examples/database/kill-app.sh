#!/usr/bin/env bash
# U2: the application crashes (SIGKILL: no graceful stop, its connections reset) and its
# supervisor starts it again a second later (APP_RESTART_DELAY_MS in the test stack).
# Nobody pauses. Prints when the process was killed (ms since the epoch).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
: "${APP:?APP names the application container}"
docker exec "$APP" kill-app
