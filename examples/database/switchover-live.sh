#!/usr/bin/env bash
# M4: switchover with the old primary left up: make it read-only, wait until the
# replica has replayed everything it wrote, promote the replica, end the old primary's
# sessions (the pool reconnects through the endpoint), move the endpoint.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
: "${PRIMARY:?}" "${REPLICA:?}" "${ENDPOINT:?}"
say "making $PRIMARY read-only"
sql "$PRIMARY" "ALTER SYSTEM SET default_transaction_read_only = on" >/dev/null
sql "$PRIMARY" "SELECT pg_reload_conf()" >/dev/null
# A new session sees the setting once the postmaster has reloaded, and by then it has
# signalled every session. Transactions begun before that may still write: wait them out.
wait_true "$PRIMARY" "SELECT current_setting('default_transaction_read_only') = 'on'"
since=$(sql "$PRIMARY" "SELECT clock_timestamp()")
wait_true "$PRIMARY" "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'client backend'
  AND pid <> pg_backend_pid() AND xact_start < '$since'::timestamptz"
lsn=$(sql "$PRIMARY" "SELECT pg_current_wal_lsn()")
say "waiting for $REPLICA to replay up to $lsn"
wait_true "$REPLICA" "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn"
say "promoting $REPLICA"
pg_ctl_in "$REPLICA" promote -w -t 60 >/dev/null
ended=$(sql "$PRIMARY" "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
  WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
say "ended $ended session(s) on $PRIMARY"
say "moving the endpoint to $REPLICA"
docker exec "$ENDPOINT" move-endpoint "$REPLICA:5432" >/dev/null
say "done: $REPLICA is the primary; $PRIMARY is up, read-only"
