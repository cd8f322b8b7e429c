#!/usr/bin/env bash
# Checks the spin model of the release protocol (model/release.pml): every property on
# the fixed protocol must hold, and each re-injected past bug (BUG1, BUG8, BUG_HELDLEAK)
# must give a counterexample. Prints states, depth and time per check, and
# "model: N passed, M failed". The configurations are listed in model/README.md.
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
# pan.c is compiled with -O0: with -O2 gcc takes minutes on it, longer than the search.
check() {
  local name=$1 expect=$2 kind=$3; shift 3
  local dir="$work/$name" cflags=(-O0 -DCOLLAPSE) runflags=(-m2000000 -w24) out verdict
  mkdir -p "$dir"; cp "$work/release.pml" "$dir/"
  if [ "$kind" = safety ]; then
    cflags+=(-DSAFETY -DNOCLAIM)
  else
    cflags+=(-DNFAIR=4); runflags+=(-a -f -N "${kind#ltl:}")
  fi
  local start; start=$(date +%s.%N)
  ( cd "$dir" && spin -a "$@" release.pml >spin.log 2>&1 && nice -n 10 gcc "${cflags[@]}" -o pan pan.c 2>gcc.log \
      && nice -n 10 ./pan "${runflags[@]}" >pan.log 2>&1 ) || true
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
  if [ "${errors:-1}" = 0 ] && ! grep -q 'max search depth too small' "$out"; then verdict=pass; else verdict=fail; fi
  local what; what=$(grep -m1 -E 'assertion violated|acceptance cycle|invalid end state|max search depth too small' "$out" | sed 's/^pan:[0-9]*: *//' | cut -c1-90 || true)
  if [ "$verdict" = "$expect" ]; then
    passed=$((passed + 1))
    say "ok   $name: ${states:-?} states, depth ${depth:-?}, ${secs}s$([ "$verdict" = fail ] && printf ' (counterexample as required: %s)' "$what")"
  else
    failed=$((failed + 1))
    say "FAIL $name: expected $expect, got $verdict: ${states:-?} states, depth ${depth:-?}, ${secs}s ${what}"
    [ "$verdict" = fail ] && (cd "$dir" && spin -t -p "$@" release.pml 2>&1 | tail -40) >&2 || true
  fi
}

# The fixed protocol, one request at the finest grain (every shared-dict step its own):
# "one": R0 through every controller sequence, an abort, the retry lane after a gateway
# failure, the ready gate. "w1": R2 in worker W1, which may die at any point (inside step()
# too) or stall GRACE before writing its ticket (passed over as dead, it queues again), and
# whose coroutine may be killed while it sleeps (abandon()).
ONE="-DNOR1 -DNOR2 -DABORT=0 -DREADY"
W1="-DNOR0 -DNOR1 -DKILL -DSTALL -DKILLCO=2 -DCTL=4"
# Two requests (COARSE: each run of a coroutine between two yields, and each advance(), is
# one step): "two": R0 and R1 in W0 with max_held 1 (the second may be refused), resume,
# repause, resume, retries; "pair": R0 in W0 and R2 in W1, which may die (every upstream
# answers; only dead holders' leases expire).
TWO="-DNOR2 -DCOARSE -DCTL=1 -DMAXHELD=1"
PAIR="-DNOR1 -DCOARSE -DKILL -DCTL=4 -DNOFAIL -DDEADEXP"
check safety-one   pass safety $ONE
check safety-w1    pass safety $W1
check safety-two   pass safety $TWO
check safety-pair  pass safety $PAIR
check leaves-one   pass ltl:leaves $ONE -DCTL=3
check leaves-w1    pass ltl:leaves $W1
check leaves-two   pass ltl:leaves $TWO
check leaves-pair  pass ltl:leaves $PAIR
check leases-one   pass ltl:leases $ONE -DCTL=4
check leases-two   pass ltl:leases $TWO
# The past bugs, put back: each must be found.
check bug1         fail safety -DBUG1 -DNOR1 -DNOR2 -DCTL=1
check bug8         fail safety -DBUG8 -DNOR1 -DNOR2 -DCTL=1
check bug-heldleak fail safety -DBUG_HELDLEAK -DNOR0 -DNOR1 -DKILL -DCTL=4
# Unplanned outages (outage.ts): entered from running, ended by the prober's finish or an
# operator's pause and resume; re-injected: the release step granting during an outage.
check outage-one  pass safety $ONE -DOUTAGE -DCTL=5
check bug-outage  fail safety -DOUTAGE -DBUG_OUTAGE -DNOR1 -DNOR2 -DCTL=5
# The fleet's control write (model/fleet-write.pml), a second, small model: a safety run
# each, the fixed protocol and its two bugs put back (see model/README.md).
fleet_write() {
  local name=$1 expect=$2 dir="$work/$1" verdict errors what; shift 2
  mkdir -p "$dir"; cp model/fleet-write.pml "$dir/"
  ( cd "$dir" && spin -a "$@" fleet-write.pml >spin.log 2>&1 && gcc -O0 -DSAFETY -DNOCLAIM -o pan pan.c 2>gcc.log \
      && ./pan -m100000 >pan.log 2>&1 ) || true
  errors=$(sed -nE 's/.*errors: ([0-9]+).*/\1/p' "$dir/pan.log" 2>/dev/null | head -1)
  if [ "${errors:-1}" = 0 ]; then verdict=pass; else verdict=fail; fi
  what=$(grep -m1 'assertion violated' "$dir/pan.log" 2>/dev/null | sed 's/^pan:[0-9]*: *//' | cut -c1-90 || true)
  if [ "$verdict" = "$expect" ]; then
    passed=$((passed + 1))
    say "ok   $name: $(awk '/states, stored/ {print $1; exit}' "$dir/pan.log") states$([ "$verdict" = fail ] && printf ' (counterexample as required: %s)' "$what")"
  else
    failed=$((failed + 1))
    say "FAIL $name: expected $expect, got $verdict ${what}"; cat "$dir/spin.log" "$dir/pan.log" >&2 || true
  fi
}
fleet_write fleet-write            pass
fleet_write fleet-write-uncertain  fail -DBUG_UNCERTAIN
fleet_write fleet-write-nofence    fail -DBUG_NOFENCE
say "model: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
