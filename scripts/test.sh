#!/usr/bin/env bash
# The whole test suite from a bare machine: Docker, images, dependencies, the build
# check, then every test file against real nginx (and Redis) containers, with the spin
# model check beside it. The last line is the verdict of both: `N passed, M failed`.
set -euo pipefail
cd "$(dirname "$0")/.."
export TESTCONTAINERS_RYUK_DISABLED=true
start=$(date +%s)
elapsed() { local s=$(( $(date +%s) - start )); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

bash scripts/docker-bootstrap.sh
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "[test] npm ci: installing the dev dependencies from package-lock.json (quiet until done; about 30 s)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "[test] npm ci done ($(elapsed) so far)"
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
tap=$(mktemp /tmp/intermission-suite-tap.XXXXXX)
trap 'rm -f "$model_log" "$tap"' EXIT
nice -n 10 bash scripts/model-check.sh >"$model_log" 2>&1 &
model_pid=$!
bash scripts/images.sh
# Every test file would run images.sh again (ensureImages): they were just built.
export INTERMISSION_IMAGES_READY=1
echo "[test] running the suite ($(elapsed) so far; on 2 cores it takes about 17 minutes)"
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(test/*.test.ts)
suite=0
# spec for the terminal; TAP beside it, for the counts of the verdict line.
node --import tsx --test --test-concurrency=1 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$tap" \
  "${files[@]}" || suite=$?
model=0
wait "$model_pid" || model=$?
echo "[test] model check report:"
cat "$model_log"
[ "$model" -eq 0 ] || echo "[test] the model check failed" >&2

# The counts: the runner's last `# pass N` / `# fail N` (cancelled tests count as failed),
# and the model's `model: N passed, M failed`. A part that ends without its counts
# counts as one failure.
last() { { grep -E "$1" "$2" | tail -n 1 | grep -oE '[0-9]+' | head -n "${3:-1}" | tail -n 1; } || true; }
s_pass=$(last '^# pass [0-9]+' "$tap")
s_fail=$(last '^# fail [0-9]+' "$tap")
s_cancel=$(last '^# cancelled [0-9]+' "$tap")
if [ -z "$s_pass" ] || [ -z "$s_fail" ]; then
  echo "[test] the suite ended without its counts (exit $suite)" >&2
  s_pass=${s_pass:-0}; s_fail=1; s_cancel=0
fi
s_fail=$(( s_fail + ${s_cancel:-0} ))
[ "$suite" -eq 0 ] || [ "$s_fail" -gt 0 ] || s_fail=1   # it failed without a failing test
m_pass=$(last 'model: [0-9]+ passed, [0-9]+ failed' "$model_log" 1)
m_fail=$(last 'model: [0-9]+ passed, [0-9]+ failed' "$model_log" 2)
if [ -z "$m_pass" ] || [ -z "$m_fail" ]; then
  echo "[test] the model check ended without its report (exit $model)" >&2
  m_pass=0; m_fail=1
fi
[ "$model" -eq 0 ] || [ "$m_fail" -gt 0 ] || m_fail=1
echo "$(( s_pass + m_pass )) passed, $(( s_fail + m_fail )) failed (suite: $s_pass passed, $s_fail failed; model: $m_pass passed, $m_fail failed; $(elapsed))"
[ "$suite" -eq 0 ] && [ "$model" -eq 0 ]
