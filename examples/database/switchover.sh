#!/usr/bin/env bash
# M2: switchover: stop the primary, promote the replica, move the endpoint to it.
# A fast shutdown sends all WAL to the replica before it ends; the script still checks
# that the replica has replayed up to the old primary's last checkpoint, so no
# acknowledged write is left behind.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
: "${PRIMARY:?}" "${REPLICA:?}" "${ENDPOINT:?}"
say "stopping $PRIMARY"
pg_ctl_in "$PRIMARY" stop -m fast -w -t 60 >/dev/null
last=$(docker exec -u postgres "$PRIMARY" pg_controldata /var/lib/postgresql/data | awk -F': *' '/^Latest checkpoint location/ {print $2}')
say "waiting for $REPLICA to replay up to $last"
wait_true "$REPLICA" "SELECT pg_last_wal_replay_lsn() >= '$last'::pg_lsn"
say "promoting $REPLICA"
pg_ctl_in "$REPLICA" promote -w -t 60 >/dev/null
say "moving the endpoint to $REPLICA"
docker exec "$ENDPOINT" move-endpoint "$REPLICA:5432" >/dev/null
say "done: $REPLICA is the primary"
