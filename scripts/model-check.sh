#!/usr/bin/env bash
# Checks the spin model of the release protocol (model/release.pml): every property on
# the fixed protocol must hold, and each re-injected past bug (BUG1, BUG8) must give a
# counterexample. Prints states, depth and time per check, and "model: N passed, M failed".
# MODEL_FULL=1 adds the larger two-request configurations (minutes, not for every run).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[model] %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v spin >/dev/null 2>&1; then
  say "spin is missing: installing Debian's spin"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq spin gcc >/dev/null
fi

work=$(mktemp -d /tmp/model-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp model/release.pml "$work/"
passed=0
failed=0

# check NAME EXPECT(pass|fail) KIND(safety|ltl:NAME) SPIN_DEFINES...
check() {
  local name=$1 expect=$2 kind=$3; shift 3
  local dir="$work/$name" cflags=(-O2) runflags=(-m400000 -w24) out verdict
  mkdir -p "$dir"; cp "$work/release.pml" "$dir/"
  if [ "$kind" = safety ]; then
    cflags+=(-DSAFETY -DNOCLAIM)
  else
    cflags+=(-DNFAIR=4); runflags+=(-a -f -N "${kind#ltl:}")
  fi
  local start; start=$(date +%s.%N)
  ( cd "$dir" && spin -a "$@" release.pml >spin.log 2>&1 && gcc "${cflags[@]}" -o pan pan.c 2>gcc.log \
      && ./pan "${runflags[@]}" >pan.log 2>&1 ) || true
  local secs; secs=$(printf '%.1f' "$(echo "$(date +%s.%N) - $start" | bc)")
  out="$dir/pan.log"
  if [ ! -s "$out" ]; then
    say "$name: spin or gcc failed"; cat "$dir/spin.log" "$dir/gcc.log" >&2 || true
    failed=$((failed + 1)); return
  fi
  local states depth errors
  states=$(awk '/states, stored/ {print $1; exit}' "$out")
  depth=$(sed -nE 's/.*depth reached ([0-9]+).*/\1/p' "$out" | head -1)
  errors=$(sed -nE 's/.*errors: ([0-9]+).*/\1/p' "$out" | head -1)
  if [ "${errors:-1}" = 0 ]; then verdict=pass; else verdict=fail; fi
  local what; what=$(grep -m1 -E 'assertion violated|acceptance cycle|invalid end state' "$out" | sed 's/^pan:[0-9]*: *//' || true)
  if [ "$verdict" = "$expect" ]; then
    passed=$((passed + 1))
    say "ok   $name: ${states:-?} states, depth ${depth:-?}, ${secs}s$([ "$verdict" = fail ] && printf ' (counterexample as required: %s)' "$what")"
  else
    failed=$((failed + 1))
    say "FAIL $name: expected $expect, got $verdict: ${states:-?} states, depth ${depth:-?}, ${secs}s ${what}"
    [ "$verdict" = fail ] && (cd "$dir" && spin -t -p "$@" release.pml 2>&1 | tail -40) >&2 || true
  fi
}

# The fixed protocol. "one": R0 held through every controller sequence (resume; repause,
# maintenance or nothing; resume or not), timeouts, an abort, leases returned on success or
# failure or expiring. "w1": R2 in worker W1, which may die at any point; one resume.
check safety-one   pass safety -DNOR1 -DNOR2 -DABORT=0
check safety-w1    pass safety -DNOR0 -DNOR1 -DKILL -DABORT=2 -DCTL=4
check leaves-one   pass ltl:leaves -DNOR1 -DNOR2 -DABORT=0
check leases-one   pass ltl:leases -DNOR1 -DNOR2 -DABORT=0
check leaves-w1    pass ltl:leaves -DNOR0 -DNOR1 -DKILL -DABORT=2 -DCTL=4
# The past bugs, put back: each must be found.
check bug1         fail safety -DBUG1 -DNOR1 -DNOR2 -DCTL=1
check bug8         fail safety -DBUG8 -DNOR1 -DNOR2 -DCTL=1
if [ "${MODEL_FULL:-}" = 1 ]; then
  check safety-two   pass safety -DNOR2 -DCTL=4 -DABORT=1
  check safety-pair  pass safety -DNOR1 -DKILL -DCTL=4
fi
say "model: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
