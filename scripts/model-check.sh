#!/usr/bin/env bash
# Checks the spin model of the release protocol (model/release.pml): every property on
# the fixed protocol must hold over the WHOLE state space, and each re-injected past bug
# (BUG1, BUG8, BUG_HELDLEAK, BUG_FULLFWD, BUG_FULLCOUNT, BUG_DEADGRANT, BUG_DEADLEASE,
# BUG_LONGLEASE, BUG_SILENTBUDGET, BUG_FAILANSWER, BUG_RESUMEFORGET, the fleet write's
# BUG_UNCERTAIN, BUG_NOFENCE, and the reclaim's BUG_NOSEAL, BUG_NOBASE, BUG_NOMARK, BUG_RESEEN) must give a
# counterexample ON ITS OWN PROPERTY, while the
# same configuration without the bug's switch (its control) passes. Prints states, depth
# and time per check, and "model: N passed, M failed". The configurations are listed in
# model/README.md.
#
# Adding a check (at the bottom of this file):
#   check NAME pass KIND DEFINES...
#       The property must hold: pan reports "errors: 0" AND the search completed. A search
#       cut short (memory limit, "Search not completed", max search depth too small, a
#       VECTORSZ/MA limit) fails the check: it proved nothing.
#   check NAME fail:TEXT KIND DEFINES...
#       A counterexample is required, and the first error pan reports ("pan:1: ...") must
#       contain TEXT: the assertion as spin prints it (macros expanded, no spaces, e.g.
#       '!(grantedAsleep)'), or 'acceptance cycle' for an LTL kind (whose never claim must be the
#       one named in KIND). Any other error, or none, fails the check.
#   bug NAME SWITCH TEXT KIND DEFINES...
#       A past bug put back: `check NAME fail:TEXT KIND SWITCH DEFINES...` and its control
#       `check NAME-control pass KIND DEFINES...` (the same configuration without SWITCH),
#       so that the counterexample is the bug's and not the configuration's.
#   KIND is `safety` (assertions, invalid end states) or `ltl:CLAIM` (pan -a -f -N CLAIM,
#   weak fairness). DEFINES are spin -D switches (see the header of model/release.pml).
#
# PML=FILE before a check runs it on model/FILE instead of model/release.pml.
# Environment: MODEL_ONLY=REGEX runs only the checks whose NAME matches; MODEL_CFLAGS adds
# gcc flags to pan (e.g. MODEL_CFLAGS=-DMEMLIM=300 shows that a search cut short fails);
# MODEL_PANFLAGS adds pan run flags.
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
passed=0
failed=0

# pan.c is compiled with -O0: with -O2 gcc takes minutes on it, longer than the search.
# Markers of a search that did not cover the state space (or could not be built).
INCOMPLETE='Search not completed|Search incomplete|max search depth too small|out of memory|reached -DMEMLIM bound|VECTORSZ too small|MA too small|hash table is full|stack incomplete'
check() {
  local name=$1 expect=$2 kind=$3; shift 3
  if [ -n "${MODEL_ONLY:-}" ] && ! [[ $name =~ $MODEL_ONLY ]]; then return; fi
  local want=""
  case $expect in
    pass) ;;
    fail:?*) want=${expect#fail:}; expect=fail ;;
    *) say "FAIL $name: bad expectation '$expect' (pass or fail:TEXT)"; failed=$((failed + 1)); return ;;
  esac
  local dir="$work/$name" cflags=(-O0 -DCOLLAPSE) runflags=(-m2000000 -w24) out verdict why claim="" pml=${PML:-release.pml}
  # shellcheck disable=SC2206
  cflags+=(${MODEL_CFLAGS:-}); runflags+=(${MODEL_PANFLAGS:-})
  mkdir -p "$dir"; cp "model/$pml" "$dir/"
  case $kind in
    safety) cflags+=(-DSAFETY -DNOCLAIM) ;;
    ltl:?*) claim=${kind#ltl:}; cflags+=(-DNFAIR=4); runflags+=(-a -f -N "$claim") ;;
    *) say "FAIL $name: bad kind '$kind' (safety or ltl:CLAIM)"; failed=$((failed + 1)); return ;;
  esac
  local start; start=$(date +%s.%N)
  ( cd "$dir" && spin -a "$@" "$pml" >spin.log 2>&1 && nice -n 10 gcc "${cflags[@]}" -o pan pan.c 2>gcc.log \
      && nice -n 10 ./pan "${runflags[@]}" >pan.log 2>&1 ) || true
  local secs; secs=$(printf '%.1f' "$(echo "$(date +%s.%N) - $start" | bc)")
  out="$dir/pan.log"
  if [ ! -s "$out" ] || ! grep -q 'states, stored' "$out"; then
    say "FAIL $name: spin, gcc or pan failed"; cat "$dir/spin.log" "$dir/gcc.log" "$out" 2>/dev/null | tail -20 >&2 || true
    failed=$((failed + 1)); return
  fi
  local states depth errors first cut
  states=$(awk '/states, stored/ {print $1; exit}' "$out")
  depth=$(sed -nE 's/.*depth reached ([0-9]+).*/\1/p' "$out" | head -1)
  errors=$(sed -nE 's/.*errors: ([0-9]+).*/\1/p' "$out" | head -1)
  first=$(grep -m1 -E '^pan:1: ' "$out" | sed 's/^pan:1: *//' || true)
  cut=$(grep -m1 -E "$INCOMPLETE" "$out" || true)
  if [ -n "$claim" ] && ! grep -qE "never claim.*\+ \($claim\)" "$out"; then
    verdict=broken; why="the never claim '$claim' was not the one checked"
  elif [ "$expect" = pass ]; then
    if [ "${errors:-1}" = 0 ] && [ -z "$cut" ]; then verdict=pass
    elif [ "${errors:-1}" != 0 ]; then verdict=fail; why="counterexample: ${first:-errors: ${errors:-?}}"
    else verdict=incomplete; why="search cut short: $cut"
    fi
  else
    # the counterexample stops the search ("Search not completed" is then expected), but a
    # memory limit or a depth limit is never the bug's property
    if [ -n "$first" ] && [[ $first == *"$want"* ]] && ! grep -qE 'max search depth too small|out of memory|reached -DMEMLIM bound' "$out"; then
      verdict=fail; why="counterexample as required: $first"
    elif [ -n "$first" ]; then verdict=other; why="a counterexample, but not on '$want': $first"
    else verdict=none; why="no counterexample on '$want'${cut:+ (search cut short: $cut)}"
    fi
  fi
  if [ "$verdict" = "$expect" ]; then
    passed=$((passed + 1))
    say "ok   $name: ${states:-?} states, depth ${depth:-?}, ${secs}s${why:+ ($why)}"
  else
    failed=$((failed + 1))
    say "FAIL $name: expected $expect${want:+ on '$want'}: ${states:-?} states, depth ${depth:-?}, ${secs}s: ${why:-?}"
    [ -n "$first" ] && (cd "$dir" && spin -t -p "$@" "$pml" 2>&1 | tail -40) >&2 || true
  fi
}

# A past bug put back (see the top of this file): it must fail on TEXT, its control must pass.
bug() {
  local name=$1 switch=$2 text=$3 kind=$4; shift 4
  check "$name" "fail:$text" "$kind" "$switch" "$@"
  check "$name-control" pass "$kind" "$@"
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
# The past bugs, put back: each must be found, on its own property; each control (the same
# configuration without the bug's switch) must pass.
#   BUG1: P1, a ticket decided twice.
bug bug1         -DBUG1        'won[k]==1'        safety -DNOR1 -DNOR2 -DCTL=1
#   BUG8: P6, a granted waiter still asleep when its deadline passes.
bug bug8         -DBUG8        '!(grantedAsleep)' safety -DNOR1 -DNOR2 -DCTL=1
#   BUG_HELDLEAK: P4, held one too high at the end.
bug bug-heldleak -DBUG_HELDLEAK '(held+unclaimed)==undecided' safety -DNOR0 -DNOR1 -DKILL -DCTL=4
# The fleet's control write (model/fleet-write.pml), a second, small model (see
# model/README.md): the fixed protocol, and its two bugs put back.
#   BUG_UNCERTAIN: a read timeout taken for "not written" (0.2.0): a "not applied" answer
#   whose change runs later.
#   BUG_NOFENCE: the resume after an unknown pause does not fence it: a late pause lands
#   after a resume answered "applied".
PML=fleet-write.pml check fleet-write pass safety
PML=fleet-write.pml check fleet-write-uncertain 'fail:(ansP!=2)||(fate[1]!=1)' safety -DBUG_UNCERTAIN
PML=fleet-write.pml check fleet-write-nofence 'fail:!(paused)' safety -DBUG_NOFENCE
# A dead worker's grant (issue 19 item 5): R0 (W0) and R2 (W1, may die anywhere); the dead
# worker's deadline + GRACE and lease expiry come only after R0 is done, and R0 has no
# deadline, so only the liveness test (a dead issuer's ticket passed over, a dead holder's
# lease reclaimed) can release R0 (P7: R0 stuck is an invalid end state). Put back: no
# test at all (BUG_DEADGRANT), or no lease reclaim (BUG_DEADLEASE); safety-dead is their
# control. (LTL leaves on $DEAD also holds: 3 min, not run here.)
DEAD="-DNOR1 -DCOARSE -DKILL -DCTL=4 -DNOFAIL -DDEADSLOW"
check safety-dead   pass safety $DEAD
check bug-deadgrant 'fail:invalid end state' safety -DBUG_DEADGRANT $DEAD
check bug-deadlease 'fail:invalid end state' safety -DBUG_DEADLEASE $DEAD
# A full queue zone (issue 19, item 1): FULL lets the zone refuse one write per run (a
# ticket's w|t, an "L", a "D" or a grant's claim). Never forwarded while paused (P5c),
# every ticket counted once (P4); BUG_FULLFWD (forward a request that cannot be held) and
# BUG_FULLCOUNT (0.2.0's count without a claim) must be found, each with its control.
FULL="-DFULL -DFULLMAX=1"
check full-one      pass safety $FULL -DNOR1 -DNOR2 -DABORT=0 -DCTL=1
check full-w1       pass safety $FULL -DNOR0 -DNOR1 -DKILL -DSTALL -DKILLCO=2 -DCTL=4
check full-two      pass safety $FULL -DNOR2 -DCOARSE -DCTL=1 -DMAXHELD=1
bug bug-fullfwd   -DBUG_FULLFWD   '!(((mode==1)||(mode==2)))'   safety $FULL -DNOR1 -DNOR2 -DCTL=4
bug bug-fullcount -DBUG_FULLCOUNT '((((seq[0]+seq[1])-decided)+unclaimed)==undecided)' safety $FULL -DNOR1 -DNOR2 -DCTL=4 -DABORT=0
# Long-lived leases (issue 23): freed and counted a success with nothing answered since
# the resume, the window grows into a hung upstream (P8).
bug bug-longlease -DBUG_LONGLEASE 'okSeen' safety -DNOR1 -DNOR2 -DCTL=4
# The unanswered budget (issue 23 item 1): a lease freed silently (nothing answered since its
# grant) counts for slow start, but since the last response start at most release_window
# requests are out unanswered (leases + silent frees, P8b); after a gateway failure, one at
# a time and no growth (P9). Re-injected: the old probe budget (probes < release_window,
# the leases out ignored): R0 and R1, release_window 1: R0 freed silently lets R1 in.
bug bug-silentbudget -DBUG_SILENTBUDGET '(used+silentOut)<=1' safety -DNOR2 -DCOARSE -DCTL=4 -DRW=1
#   BUG_FAILANSWER: a gateway failure restores the budget as a response start does: R0,
#   freed silently, fails; R1's lease, out, is then freed silently and grows the window (P9).
bug bug-failanswer -DBUG_FAILANSWER '!(failed)' safety -DNOR2 -DCOARSE -DCTL=4
#   BUG_RESUMEFORGET: a resume forgets the back-off and the budget while no lease is out:
#   on "two", R0 fails, the repause and resume forget it, and R0's retry, freed silently,
#   grows the window (P9).
bug bug-resumeforget -DBUG_RESUMEFORGET '!(failed)' safety $TWO
# Unplanned outages (outage.ts): entered from running, ended by the prober's finish or an
# operator's pause and resume; re-injected: the release step granting during an outage.
check outage-one  pass safety $ONE -DOUTAGE -DCTL=6
bug bug-outage -DBUG_OUTAGE '!((((mode==1)||(mode==2))||(mode==4)))' safety -DOUTAGE -DNOR1 -DNOR2 -DCTL=6
# Reclaiming an idle scope (issue 23 item 3, model/reclaim.pml, a third small model): two
# ticket takers against the advancer's and a sweep's reclaims. Put back: no seal (a ticket
# taken after the idle check is deleted with the scope), no base (a ticket number issued
# again), no mark comparison (a sealed ticket taken for one of the scope made again), the
# seal compared with seq read again (found by this model in the first draft).
PML=reclaim.pml check reclaim pass safety
PML=reclaim.pml bug reclaim-noseal -DBUG_NOSEAL '((myinc==inc)&&seqx)' safety
PML=reclaim.pml check reclaim-nobase 'fail:!(issued[t])' safety -DBUG_NOBASE
PML=reclaim.pml check reclaim-nomark 'fail:((myinc==inc)&&seqx)' safety -DBUG_NOMARK
PML=reclaim.pml check reclaim-reseen 'fail:(undecided==0)' safety -DBUG_RESEEN
say "model: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
