#!/usr/bin/env bash
# M1: restart the primary (a configuration change, a minor upgrade): fast shutdown,
# which ends every session, then start; pg_ctl returns once it accepts connections.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
: "${PRIMARY:?PRIMARY names the primary container}"
say "pg_ctl restart -m fast on $PRIMARY"
pg_ctl_in "$PRIMARY" restart -m fast -w -t 60 -l /var/lib/postgresql/postgres.log >/dev/null
say "done"
