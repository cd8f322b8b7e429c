#!/usr/bin/env bash
# M3: restart the application (a deploy): stop the old process, spawn the new one, and
# return at once, as `systemctl restart` does for a simple service: the new process
# is not listening yet when this script ends.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
: "${APP:?APP names the application container}"
docker exec "$APP" restart-app
