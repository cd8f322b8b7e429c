#!/usr/bin/env bash
# npm run demo: from a bare machine, start the demo stack (intermission on :8080 in
# front of a tiny backend, plus Redis) and run a simulated maintenance against it; then
# restart a real PostgreSQL under load twice, without and inside intermission run; then
# restart the application under load with nobody pausing (an unplanned outage), through
# plain nginx and through intermission (outage_hold).
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
# Whether this demo starts dockerd (docker-bootstrap.sh does when nothing answers): it is
# left running with the stack, and the end says how to stop it.
docker info >/dev/null 2>&1 && dockerd_was_up=1 || dockerd_was_up=0
bash scripts/docker-bootstrap.sh
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || {
  echo "[demo] installing docker-compose"
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
}
compose() { if command -v docker-compose >/dev/null 2>&1; then docker-compose "$@"; else docker compose "$@"; fi; }
# The test suite builds the images once before it runs (scripts/test.sh) and says so.
[ "${INTERMISSION_IMAGES_READY:-}" = 1 ] || bash scripts/images.sh --no-luarocks
compose up -d --no-build
for _ in $(seq 1 100); do
  curl -fsS -o /dev/null http://127.0.0.1:8080/_intermission/status 2>/dev/null && break
  sleep 0.1
done
curl -fsS http://127.0.0.1:8080/ || { echo "[demo] the stack did not come up"; compose logs --tail 50; exit 1; }
bash examples/maintenance.sh
db_status=0
# The database demo's output as it comes, but its last two lines (the verdicts: the
# planned database restart, the unplanned application restart) held back, to be printed
# once, at the very end.
verdict=$(mktemp /tmp/intermission-demo-verdict.XXXXXX)
trap 'rm -f "$verdict"' EXIT
container() { docker inspect -f "{{.Name}}" "$(compose ps -q "$1")" | sed "s#^/##"; }
PRIMARY=$(container postgres) APP=$(container app) FRONT_CONTAINER=$(container intermission-db) bash examples/database/demo.sh \
  | awk -v out="$verdict" -v keep=2 '
      NR > keep { print line[NR % keep]; fflush() }
      { line[NR % keep] = $0 }
      END { for (i = (NR > keep ? NR - keep + 1 : 1); i <= NR; i++) print line[i % keep] > out }' \
  || db_status=$?
cat <<'TXT'

The demo stack is left running (five containers: docker-compose ps), so you can try it:
  curl localhost:8080/                                   # through intermission
  node bin/intermission.js status                        # the CLI (control API on loopback)
  curl localhost:8080/control                            # the seed's toggle: pause / resume
  curl 'localhost:8090/write?id=hello'                   # a write to PostgreSQL, through intermission
  curl 'localhost:8092/write?id=hello'                   # the same through plain nginx
  docker-compose down                                    # stop it (the images stay: docker image ls)
TXT
if [ "$dockerd_was_up" -eq 0 ] && [ -s /var/run/docker.pid ]; then
  printf '  %-55s# %s\n' "sudo kill $(cat /var/run/docker.pid)" "dockerd: this demo started it (log: /var/log/dockerd.log)"
fi
echo
# The verdicts, last and once: failed requests when the database restarts (without and
# inside intermission run) and when the application restarts unplanned (without and with
# outage_hold).
cat "$verdict"
exit "$db_status"
