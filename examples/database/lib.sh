# Helpers for the maintenance scripts beside this file. Containers are named by
# environment variables (a real setup would ssh to hosts instead of docker exec):
#   PRIMARY, REPLICA   the postgres containers (their names resolve on their network)
#   ENDPOINT           the floating endpoint (TCP proxy standing in for a VIP/DNS name)
#   APP                the application container
say() { printf '%s [%s] %s\n' "$(date +%T.%3N)" "$(basename "$0" .sh)" "$*"; }
# pg_ctl as the postgres user in container $1.
pg_ctl_in() { local c=$1; shift; docker exec -u postgres "$c" pg_ctl -D /var/lib/postgresql/data "$@"; }
# One SQL query in container $1 (database app), unaligned and tuples only.
sql() { docker exec -u postgres "$1" psql -X -q -At -v ON_ERROR_STOP=1 -d app -c "$2"; }
# Waits until query $2 in container $1 answers "t" (at most $3 tenths of a second).
wait_true() {
  local i=0
  until [ "$(sql "$1" "$2")" = "t" ]; do
    i=$((i + 1))
    [ "$i" -lt "${3:-300}" ] || { say "gave up waiting for: $2"; return 1; }
    sleep 0.1
  done
}
