#!/usr/bin/env bash
# The whole test suite from a bare machine: Docker, images, dependencies, the build
# check, then every test file against real nginx (and Redis) containers.
set -euo pipefail
cd "$(dirname "$0")/.."
export TESTCONTAINERS_RYUK_DISABLED=true

bash scripts/docker-bootstrap.sh
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "[test] npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
echo "[test] build: dist/ must match src/"
npm run -s build
if [ -n "$(git status --porcelain -- dist bin "*.rockspec" rocks 2>/dev/null)" ]; then
  echo "[test] dist/, bin/ or the rockspecs differ from a fresh build: commit the rebuilt files" >&2
  git status --short -- dist bin "*.rockspec" rocks >&2
  [ "${CI:-}" = "true" ] && exit 1
fi
npm run -s typecheck
# The spin model check (single-threaded, minutes) runs beside the integration suite, at a
# lower priority; its verdict counts as much as the suite's.
echo "[test] model check: model/release.pml with spin (in the background; its report follows the suite)"
model_log=$(mktemp /tmp/model-check-log.XXXXXX)
nice -n 10 bash scripts/model-check.sh >"$model_log" 2>&1 &
model_pid=$!
bash scripts/images.sh
echo "[test] running the suite"
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(test/*.test.ts)
suite=0
node --import tsx --test --test-concurrency=1 --test-reporter=spec "${files[@]}" || suite=$?
model=0
wait "$model_pid" || model=$?
echo "[test] model check report:"
cat "$model_log"
rm -f "$model_log"
[ "$model" -eq 0 ] || echo "[test] the model check failed" >&2
[ "$suite" -eq 0 ] && [ "$model" -eq 0 ]
