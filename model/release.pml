/*
 * intermission: a Promela model of the release protocol (spin 6).
 *
 * What each part mirrors in src/intermission/:
 *   inline settle_lease      release.ts settleLease()
 *   inline return_lease      release.ts returnLease()
 *   inline reclaim_expired   release.ts reclaimExpired()
 *   inline window_has_room   release.ts windowHasRoom()
 *   inline grant             release.ts grant()
 *   inline pass_over_dead    release.ts passOverDead()
 *   inline decide            release.ts decide()
 *   inline step              release.ts step()        (the pause TTL / auto-resume is not modelled)
 *   inline advance           release.ts advance()     (the scope lock and the `dirty` re-run)
 *   inline leave             release.ts leave()
 *   proctype Request         gate.ts holdRequest() + release.ts admit()/hold(), then the
 *                            response: gate.ts responseStarted() (header_filter/log)
 *   proctype Watcher         waiters.ts watcher()/pumpScope(), track()/done()/post()
 *   proctype Controller      state.ts pause()/maintenance()/resume() through
 *                            release.ts withScopeLock() and resumeLocked(), mode.ts writeMode()
 *   proctype Clock           the passing of time: deadlines, deadline + GRACE, lease expiry,
 *                            the back-off, the lock's TTL (dead holder), the `unwritten` grace
 *   proctype Killer          one nginx worker (W1) dies: its coroutines vanish mid-statement
 *   proctype Checker         the quiescent end: one more advance() and the end-state checks
 *
 * Granularity: every shared-dict operation (get, set, add, incr, delete) is one step, so
 * the code of two workers interleaves between any two of them. Keys that only the holder
 * of the scope lock writes (head, stop, mode, leaseSeq, leaseOldest) are read together.
 * Inside one worker, Lua coroutines are cooperative: a coroutine keeps the worker (cpu[w])
 * from resuming until it yields (ngx.sleep, sema:wait, proxying upstream). Time does not
 * pass while a live worker holds the scope lock (step() reads ngx.now() once), and a
 * deadline does not pass before the worker's watcher has polled after the head or the
 * mode moved (poll_interval, 2 ms, is far shorter than max_hold): see `fresh`.
 *
 * Re-injected past bugs (compile with -DBUG1 or -DBUG8; each must give a counterexample):
 *   BUG1  "left" markers carry a TTL (max_hold + 60 s, as the old per-ticket keys did), so
 *         one expires while a pause freezes the queue and the ticket is decided again.
 *   BUG8  the watcher wakes granted waiters only while the scope runs: a request granted
 *         just before a repause sleeps until max_hold and is then forwarded, although
 *         on_timeout = "reject" and the scope is paused.
 * Scenario switches (findings in the real code, see model/README.md):
 *   LOCKDEATH  W1 may also die while it holds the scope lock, inside step().
 *   STALL a worker may stall for GRACE between incr(seq) and safe_add(w|t), so the
 *         advancer passes its unwritten ticket over as dead while it is still there.
 *
 * on_timeout is "reject" throughout; release_window = 2.
 */

#define NR    3      /* held requests: R0, R1 in worker W0, R2 in worker W1 */
#define NW    2      /* workers that hold requests */
#define CW    2      /* the worker that serves the control API */
#define MAXT  5      /* ticket numbers 1..MAXT */
#define MAXL  5      /* lease numbers 1..MAXL */
#define RW    2      /* release_window */
#define SLOTS 4      /* a worker's waiter list (waiters.ts LocalQueue) */

#define WORKER(r) ((r) == 2 -> 1 : 0)

/* modes (mode.ts) */
#define RUNNING  0
#define PAUSED   1
#define MAINT    2
#define DRAINING 3
#define STOPPED(m) ((m) == PAUSED || (m) == MAINT)

/* claim values c|t: absent, "L", "D", or a lease number g (stored as 3 + g; g = 0: unpaced) */
#define NONE 0
#define LEFT 1
#define DEAD 2
#define GRANT(g) (3 + (g))
#define ISGRANT(c) ((c) >= 3)
#define LEASEOF(c) ((c) - 3)

/* lease l|g: absent, outstanding (expiry time >= 0), being settled (after incr(-SETTLE)) */
#define L_NONE 0
#define L_OUT  1
#define L_SETTLING 2
#define OUTSTANDING ((lease[1] != 0) + (lease[2] != 0) + (lease[3] != 0) + (lease[4] != 0) + (lease[5] != 0))

/* how a lease ends */
#define SUCCESS 0
#define FAILURE 1
#define UNUSED  2

/* a request's semaphore (ngx.semaphore): not waiting, waiting, woken by post/timeout */
#define S_IDLE    0
#define S_WAIT    1
#define S_POSTED  2
#define S_TIMEOUT 3

/* what a request is doing */
#define R_NEW      0
#define R_HOLDING  1
#define R_FORWARD  2   /* released: proxied upstream, its lease not given back yet */
#define R_FINISHED 3

/* outcomes of hold() */
#define O_TIMEOUT 0
#define O_ABORTED 1
#define O_MAINT   2

/* ---- the state zone ---- */
byte mode = PAUSED;          /* the scope was paused before the first request came */
byte seq, head, stop, used, leaseSeq, leaseOldest;
byte window = 1;
short held;
bool boff;                   /* now < backoffUntil */
bool lock;                   /* the scope lock (add with LOCK_TTL) */
byte lockOwner;
bool dirty;                  /* `dirty`: the holder runs step() again when it was bumped (see advance) */

/* ---- the queue zone ---- */
bool wkey[MAXT + 1];         /* w|t, the ticket's deadline */
byte claim[MAXT + 1];        /* c|t */
byte lease[MAXL + 1];        /* l|g */
bool lexp[MAXL + 1];         /* l|g's expiry time has passed */

/* ---- per worker (module state of the Lua VM) ---- */
bool alive[3] = true;
byte cpu[NW];                /* the coroutine that runs in the worker: 0 none, r + 1, or WATCHER */
#define WATCHER 9
byte wl[NW * SLOTS];         /* the waiter list: request + 1, 0 = undefined */
byte wfirst[NW] = 1;
byte wlast[NW];
byte waiting[NW];            /* watch.waiting */
bool fresh[NW];              /* the watcher polled since the head or the mode last moved */
bool kick;                   /* advance() was called: a step() is due */
byte useen[3];               /* release.ts `unwritten`: the ticket first seen issued but unwritten */
bool ugrace[3];              /* ... and GRACE has passed since */

/* ---- per request ---- */
byte dl[NR];                 /* 0: before its deadline, 1: past it, 2: past deadline + GRACE */
byte sem[NR];
bool aborted[NR];
bool rdone[NR];              /* waiter.done */
byte rticket[NR];
byte rstate[NR];

/* ---- bookkeeping for the properties (not in the real code) ---- */
byte issuer[MAXT + 1];       /* request + 1 that took ticket t */
byte won[MAXT + 1];          /* successful adds on c|t */
byte holder[MAXL + 1];       /* request + 1 that was granted lease g */
bool grantedLate[NR];        /* its grant came after its deadline had passed */
bool ctlDone;
byte stalls;

#define CLOCK_OK ((!lock || !alive[lockOwner]) && (cpu[0] == 0 || !alive[0]) && (cpu[1] == 0 || !alive[1]))
#define GATE(r) (fresh[WORKER(r)] || !alive[WORKER(r)] || waiting[WORKER(r)] == 0)

/* ---------------------------------------------------------------------------------- */

/* settleLease(): incr(l|g, -SETTLE) decides the one settler; its delete, the used
 * decrement and the window/back-off update follow in the same step (see "Granularity"). */
inline settle_lease(g, endk, res) {
  atomic {
    if
    :: lease[g] == L_OUT ->
       lease[g] = L_NONE; lexp[g] = false; holder[g] = 0;
       used--;
       if
       :: endk == FAILURE -> boff = true; window = 1
       :: endk == SUCCESS && window < RW -> window = (window * 2 > RW -> RW : window * 2)
       :: else
       fi;
       res = true
    :: else -> res = false
    fi
  }
}

/* windowHasRoom() with reclaimExpired(): leases are granted in order and expire in order.
 * Part of step A below. */
inline window_has_room(room) {
  if
  :: boff -> room = false                        /* now < backoffUntil */
  :: else ->
     win = window;
     if
     :: used < win -> room = true
     :: else ->
        o = leaseOldest;
        do
        :: o < leaseSeq ->
           if
           :: lease[o + 1] == L_OUT && !lexp[o + 1] -> break       /* v > now */
           :: lease[o + 1] == L_OUT && lexp[o + 1] ->
              lease[o + 1] = L_NONE; lexp[o + 1] = false; holder[o + 1] = 0; used--;   /* settleLease(success) */
              if
              :: window < RW -> window = (window * 2 > RW -> RW : window * 2)
              :: else
              fi
           :: else
           fi;
           o++
        :: else -> break
        od;
        leaseOldest = o;
        room = (used < win)
     fi
  fi;
  o = 0; win = 0
}

#define UNFRESH  fresh[0] = false; fresh[1] = false
#define TICK     fresh[0] = false; fresh[1] = false; kick = true

/*
 * step(), decide(), grant(), passOverDead(): the caller holds the scope lock. Each ticket
 * takes two steps: A, everything up to the add on its claim c|t (windowHasRoom(), get(w|t),
 * the deadline check, the lease's creation), and B, the add on c|t with what follows it.
 * A request's own ops (writing w|t, its "L" add) interleave between them and between tickets.
 */
inline step() {
  atomic {                                       /* modeOf(); st.get(seq); head, stop */
    m = mode; s = seq; h = head; hstart = h; st = stop;
    act = (STOPPED(m) || h >= s -> 0 : 1)
  }
  do
  :: act == 0 -> break
  :: act != 0 ->
     atomic {                                    /* A */
       k = h + 1;
       paced = (k <= st);
       room = true;
       if
       :: paced -> window_has_room(room)
       :: else
       fi;
       if
       :: !room -> act = 0
       :: else ->
          if
          :: !wkey[k] ->                         /* q.get(w|t): nil */
             if
             :: claim[k] != NONE ->              /* q.get(c|t): it could not write w|t and left */
                claim[k] = NONE;                 /* q.delete(c|t) */
                h++; act = (h < s -> 1 : 0)
             :: else ->                          /* issued, not yet written */
                if
                :: useen[me] != k -> useen[me] = k; ugrace[me] = false; act = 0
                :: else -> act = (ugrace[me] -> 2 : 0)    /* GRACE since first seen: dead */
                fi
             fi
          :: else ->
             if
             :: dl[issuer[k] - 1] == 2 -> act = 2         /* deadline + GRACE < now: dead */
             :: else ->
                act = 3; g = 0;
                if
                :: paced ->                      /* incr(leaseSeq); safe_add(l|g); incr(used) */
                   leaseSeq++; g = leaseSeq; assert(g <= MAXL);
                   lease[g] = L_OUT; lexp[g] = false;
                   used++;
                   assert(OUTSTANDING <= RW && used <= RW)   /* P2: at most release_window leases */
                :: else
                fi
             fi
          fi
       fi
     }
     if
     :: act == 2 ->
        atomic {                                 /* B, passOverDead(): q.safe_add(c|t, "D") */
          if
          :: claim[k] == NONE -> claim[k] = DEAD; won[k]++; assert(won[k] == 1); held--
          :: else -> claim[k] = NONE             /* it left after all */
          fi;
          wkey[k] = false;                       /* q.delete(w|t) */
          h++; act = (h < s -> 1 : 0)
        }
     :: act == 3 ->
        atomic {                                 /* B, grant(): q.safe_add(c|t, lease) */
          if
          :: claim[k] == NONE ->
             claim[k] = GRANT(g);
             won[k]++;
             assert(won[k] == 1);                /* P1: a ticket is decided once */
             assert(!STOPPED(mode));             /* P5a: no grant while paused/maintenance */
             grantedLate[issuer[k] - 1] = (dl[issuer[k] - 1] >= 1);
             holder[g] = (g > 0 -> issuer[k] : 0);
             held--                              /* the winner owns the decrement */
          :: else ->                             /* it left before its turn ("L") */
             if
             :: g > 0 && lease[g] == L_OUT -> lease[g] = L_NONE; lexp[g] = false; used--   /* settleLease(unused) */
             :: else
             fi;
             claim[k] = NONE                     /* pass it over */
          fi;
          wkey[k] = false;                       /* q.delete(w|t) */
          g = 0;
          h++; act = (h < s -> 1 : 0)
        }
     :: else
     fi
  od;
  atomic {
    if
    :: h != hstart -> head = h; UNFRESH          /* st.safe_set(head) */
    :: else
    fi;
    if
    :: m == DRAINING && h >= s -> mode = RUNNING; UNFRESH   /* writeMode(draining, running) */
    :: else
    fi;
    lock = false;                                /* st.delete(lock) */
    m = 0; s = 0; h = 0; hstart = 0; st = 0; k = 0; paced = false; room = false; act = 0
  }
}

/* advance(): st.incr(dirty); tryLock() (a non-blocking safe_add); the holder runs step()
 * again while `dirty` was bumped meanwhile. Its guarantee -- after any call, a whole step()
 * starts after the call -- is checked on its own in model/advance.pml; here a call sets
 * `kick` and proctype Advancer runs step() after it. */
inline advance() {
  kick = true
}

inline return_lease(g, endk) {
  if
  :: g > 0 ->
     settle_lease(g, endk, res);
     if
     :: res -> advance()
     :: else
     fi
  :: else
  fi
}

/* waiters.done() and leave(): c = the claim that beat "L" (NONE when "L" won) */
inline leave(t, c) {
  atomic {                                       /* q.safe_add(c|t, "L") */
    rdone[r] = true; waiting[me]--;              /* waiters.done(): worker-local */
    if
    :: claim[t] == NONE ->
       claim[t] = LEFT; won[t]++; assert(won[t] == 1); res = true;
       held--                                    /* the winner owns the decrement */
    :: else ->
       res = false;
       c = claim[t];                             /* q.get(c|t) ... */
       claim[t] = NONE                           /* ... q.delete(c|t): no one else touches it now */
    fi
  }
  if
  :: res -> res = false; advance(); c = NONE
  :: else
  fi
}

/* ---------------------------------------------------------------------------------- */

proctype Request(byte r) {
  byte me = WORKER(r);
  byte t, c, g, e, outcome, m, woke;
  bool ok, res;
  {
    atomic {                                     /* access(): state.settle(), the mode */
      cpu[me] == 0 -> cpu[me] = r + 1;
      if
      :: mode == RUNNING || mode == MAINT ->     /* forwarded at once, or answered 503 */
         rstate[r] = R_FINISHED; cpu[me] = 0
      :: else ->
         held++;                                 /* admit(): st.incr(held, 1) (max_held not modelled) */
         rstate[r] = R_HOLDING
      fi
    }
    if
    :: rstate[r] == R_FINISHED -> goto finish
    :: else
    fi;
again:
#ifndef STALL
    if
    :: r != 2 ->                                 /* W0 never dies or stalls: one step */
       atomic {                                  /* incr(seq); safe_add(w|t); track(); advance() */
         seq++; t = seq; assert(t <= MAXT); issuer[t] = r + 1; rticket[r] = t;
         wkey[t] = true; rdone[r] = false; waiting[me]++; wlast[me]++;
         assert(wlast[me] < SLOTS); wl[me * SLOTS + wlast[me]] = r + 1;
         kick = true
       }
    :: else ->
#endif
       atomic { seq++; t = seq; assert(t <= MAXT); issuer[t] = r + 1; rticket[r] = t }  /* incr(seq) */
       atomic {                                  /* q.safe_add(w|t, deadline); waiters.track(); advance() */
         wkey[t] = true;
         rdone[r] = false;
         waiting[me]++;
         wlast[me]++;
         assert(wlast[me] < SLOTS);
         wl[me * SLOTS + wlast[me]] = r + 1;
         kick = true
       }
#ifndef STALL
    fi;
#endif
    outcome = O_TIMEOUT;
    woke = S_IDLE;
    do
    :: atomic {
         c = claim[t];                           /* q.get(c|t) */
         if
         :: ISGRANT(c) ->
            /* P5b: a request woken by its deadline while the scope is stopped again is
             * not forwarded, unless its grant came after that deadline (they crossed). */
            assert(!(woke == S_TIMEOUT && STOPPED(mode) && !grantedLate[r]));
            claim[t] = NONE;                     /* q.delete(c|t) */
            rdone[r] = true; waiting[me]--;      /* waiters.done() */
            g = LEASEOF(c); c = 0; ok = true
         :: else
         fi
       }
       if
       :: ok -> ok = false; goto released
       :: c == DEAD -> break
       :: else
       fi;
       atomic {
         if
         :: aborted[r] -> outcome = O_ABORTED; ok = true
         :: else ->
            if
            :: mode == MAINT -> outcome = O_MAINT; ok = true     /* modeOf() */
            :: else -> ok = (dl[r] >= 1)                         /* remaining <= 0 */
            fi
         fi;
         if
         :: !ok ->                               /* w.sema.wait(remaining): yields */
            sem[r] = S_WAIT; cpu[me] = 0
         :: else
         fi
       }
       if
       :: ok -> ok = false; break
       :: else
       fi;
       atomic {                                  /* resumed: posted, timed out, or aborted */
         cpu[me] == 0 && sem[r] >= S_POSTED -> cpu[me] = r + 1; woke = sem[r]; sem[r] = S_IDLE
       }
    od;
    leave(t, c);
    if
    :: c == NONE -> goto answered                /* "left" */
    :: ISGRANT(c) ->                             /* granted just as it was leaving */
       atomic {
         g = LEASEOF(c); c = 0;
         m = mode                                /* modeOf() */
       }
       if
       :: outcome == O_ABORTED || (outcome == O_TIMEOUT && STOPPED(m)) ->
          m = 0;
          return_lease(g, UNUSED);
          goto answered
       :: else -> m = 0; goto released
       fi
    :: else ->                                   /* "dead": passed over while still here */
       c = 0;
       if
       :: outcome == O_TIMEOUT && dl[r] == 0 -> held++; goto again     /* queue again */
       :: else -> goto answered
       fi
    fi;
released:
    atomic { rstate[r] = R_FORWARD; cpu[me] = 0; woke = 0 }  /* proxied upstream: yields */
    if
    :: g > 0 ->
       atomic { cpu[me] == 0 -> cpu[me] = r + 1 }  /* header_filter or log */
       if
       :: e = SUCCESS                            /* the upstream answered */
       :: e = FAILURE                            /* a gateway failure (502/503/504) */
       fi;
       return_lease(g, e);
       cpu[me] = 0
    :: else
    fi;
    rstate[r] = R_FINISHED;
    goto finish;
answered:
    atomic { rstate[r] = R_FINISHED; cpu[me] = 0 }
finish:
    atomic { t = 0; c = 0; g = 0; e = 0; outcome = 0; woke = 0; ok = false; res = false }
  } unless { !alive[me] }
}

/* A client goes away while its request sleeps: ngx.on_abort's handler runs in the
 * request's worker, sets w.aborted and posts it (waiters.wake). One abort per run. */
active proctype Abort() {
#ifdef ABORT
  if
  :: atomic { cpu[WORKER(ABORT)] == 0 && rstate[ABORT] == R_HOLDING && sem[ABORT] == S_WAIT &&
       alive[WORKER(ABORT)] -> aborted[ABORT] = true; sem[ABORT] = S_POSTED }
  :: skip
  fi
#else
  skip
#endif
}

proctype Watcher(byte w) {
  byte me = w;
  byte h, i, rr;
  {
end:
    do
    :: atomic { waiting[w] > 0 && cpu[w] == 0 && !fresh[w] -> cpu[w] = WATCHER }   /* a poll */
       /* watch.advance(): the poll that follows a passing of time kicks the advancer; every
        * other change is followed by its maker's own advance() */
       atomic {                                  /* maintenance: wake every waiter */
         if
         :: mode == MAINT ->
            i = wfirst[w];
            do
            :: i <= wlast[w] ->
               rr = wl[w * SLOTS + i];
               if
               :: rr != 0 && !rdone[rr - 1] && sem[rr - 1] == S_WAIT -> sem[rr - 1] = S_POSTED
               :: else
               fi;
               i++
            :: else -> break
            od
         :: else
         fi
       }
       atomic {                                  /* wake the waiters the head has passed */
         h = head;
#ifdef BUG8
         if
         :: mode == PAUSED -> goto polled        /* the old watcher: only while the scope runs */
         :: else
         fi;
#endif
         do
         :: wfirst[w] <= wlast[w] ->
            rr = wl[w * SLOTS + wfirst[w]];
            if
            :: rr != 0 && !rdone[rr - 1] ->
               if
               :: rticket[rr - 1] > h -> break
               :: else ->
                  if
                  :: sem[rr - 1] == S_WAIT -> sem[rr - 1] = S_POSTED
                  :: else
                  fi
               fi
            :: else
            fi;
            wl[w * SLOTS + wfirst[w]] = 0;
            wfirst[w]++
         :: else -> break
         od;
         if
         :: wfirst[w] > wlast[w] -> wfirst[w] = 1; wlast[w] = 0
         :: else
         fi;
polled:
         /* P6: a poll leaves no waiter asleep whose ticket the head has passed */
         assert(!(WORKER(0) == w && sem[0] == S_WAIT && !rdone[0] && rticket[0] <= h));
         assert(!(WORKER(1) == w && sem[1] == S_WAIT && !rdone[1] && rticket[1] <= h));
         assert(!(WORKER(2) == w && sem[2] == S_WAIT && !rdone[2] && rticket[2] <= h));
         fresh[w] = true;
         h = 0; i = 0; rr = 0;
         cpu[w] = 0                              /* sema:wait(poll_interval) */
       }
    :: ctlDone && rstate[0] == R_FINISHED && rstate[1] == R_FINISHED && rstate[2] == R_FINISHED -> break
    od
  } unless { !alive[w] }
}

/* state.ts transition(): withScopeLock() waits for the lock, runs the change, unlocks and
 * advances. Under the lock nothing else runs step(), so a pause is one step. */
/* Runs step() under the scope lock after every advance() call (see advance). */
active proctype Advancer() {
  byte me = CW;
  byte t, g, o, m, s, h, hstart, st, win, k, act;
  bool paced, room;
end:
  do
  :: atomic { kick && !lock -> kick = false; lock = true; lockOwner = me }
     step()
  od
}

inline stop_scope(to) {                          /* stop(): writeMode(previous, to) */
  atomic { !lock -> mode = to; UNFRESH }
  advance()
}

inline resume_scope() {                          /* resume(): resumeLocked() */
  atomic {
    !lock -> lock = true; lockOwner = me; m = mode;
    if
    :: m == RUNNING || m == DRAINING -> skip
    :: else ->                                   /* st.get(seq); stop, window, back-off */
       s = seq; stop = s; window = 1; boff = false
    fi
  }
  atomic {
    if
    :: m == PAUSED || m == MAINT -> mode = (head < s -> DRAINING : RUNNING); UNFRESH   /* writeMode() */
    :: else
    fi;
    lock = false; lockOwner = 0; m = 0; s = 0
  }
  advance()
}

active proctype Controller() {
  byte me = CW;
  byte m, s;
  (rticket[0] != 0 || rstate[0] == R_FINISHED) && (rticket[1] != 0 || rstate[1] == R_FINISHED);  /* R0, R1 came while paused */
  resume_scope();
#if CTL == 1                                     /* resume, repause, resume */
  stop_scope(PAUSED);
  resume_scope();
#elif CTL == 2                                   /* resume, maintenance, resume */
  stop_scope(MAINT);
  resume_scope();
#elif CTL == 3                                   /* resume, repause (for good) */
  stop_scope(PAUSED);
#elif CTL == 4                                   /* resume only */
  skip;
#else
  if
  :: stop_scope(PAUSED)                          /* repause */
  :: stop_scope(MAINT)                           /* maintenance */
  :: skip
  fi;
  if
  :: mode != RUNNING && mode != DRAINING -> resume_scope()
  :: skip
  fi;
#endif
  ctlDone = true
}

active proctype Killer() {
#ifndef KILL
  skip
#else
  if
#ifdef LOCKDEATH
  :: alive[1] = false                            /* at any point, inside step() too */
#else
  /* not while it holds the scope lock, nor between admit()'s incr(held) and incr(seq)
   * (both are findings: model/README.md) */
  :: atomic { !(lock && lockOwner == 1) && !(rstate[2] == R_HOLDING && rticket[2] == 0) -> alive[1] = false }
#endif
  :: skip
  fi
#endif
}

active proctype Clock() {
end:
  do
  /* deadlines: a sleeping request is woken by its semaphore's timeout */
  :: atomic { CLOCK_OK && GATE(0) && rstate[0] == R_HOLDING && dl[0] == 0 ->
       dl[0] = 1; if :: sem[0] == S_WAIT -> sem[0] = S_TIMEOUT :: else fi }
  :: atomic { CLOCK_OK && GATE(1) && rstate[1] == R_HOLDING && dl[1] == 0 ->
       dl[1] = 1; if :: sem[1] == S_WAIT -> sem[1] = S_TIMEOUT :: else fi }
  :: atomic { CLOCK_OK && GATE(2) && rstate[2] == R_HOLDING && dl[2] == 0 ->
       dl[2] = 1; if :: sem[2] == S_WAIT -> sem[2] = S_TIMEOUT :: else fi }
  /* deadline + GRACE: W0 always leaves within GRACE of a deadline, W1 may not (or dies) */
  :: atomic { CLOCK_OK && dl[2] == 1 -> dl[2] = 2; TICK }
  /* leases expire release_lease after their grant */
  :: atomic { CLOCK_OK && lease[1] == L_OUT && !lexp[1] -> lexp[1] = true; TICK }
  :: atomic { CLOCK_OK && lease[2] == L_OUT && !lexp[2] -> lexp[2] = true; TICK }
  :: atomic { CLOCK_OK && lease[3] == L_OUT && !lexp[3] -> lexp[3] = true; TICK }
  :: atomic { CLOCK_OK && lease[4] == L_OUT && !lexp[4] -> lexp[4] = true; TICK }
  :: atomic { CLOCK_OK && lease[5] == L_OUT && !lexp[5] -> lexp[5] = true; TICK }
  :: atomic { CLOCK_OK && boff -> boff = false; TICK }
  /* the scope lock's TTL: only a dead holder leaves it set */
  :: atomic { lock && !alive[lockOwner] -> lock = false; TICK }
  /* GRACE passes since an advancer first saw a ticket issued but unwritten, because its
   * request's worker died between incr(seq) and safe_add(w|t) (STALL: or stalled there) */
  :: atomic { CLOCK_OK && useen[0] != 0 && !ugrace[0] && !alive[WORKER(issuer[useen[0]] - 1)] -> ugrace[0] = true; TICK }
  :: atomic { CLOCK_OK && useen[1] != 0 && !ugrace[1] && !alive[WORKER(issuer[useen[1]] - 1)] -> ugrace[1] = true; TICK }
  :: atomic { CLOCK_OK && useen[2] != 0 && !ugrace[2] && !alive[WORKER(issuer[useen[2]] - 1)] -> ugrace[2] = true; TICK }
#ifdef STALL
  :: atomic { CLOCK_OK && useen[0] != 0 && !ugrace[0] && stalls == 0 && !wkey[useen[0]] -> ugrace[0] = true; stalls = 1; TICK }
  :: atomic { CLOCK_OK && useen[1] != 0 && !ugrace[1] && stalls == 0 && !wkey[useen[1]] -> ugrace[1] = true; stalls = 1; TICK }
  :: atomic { CLOCK_OK && useen[2] != 0 && !ugrace[2] && stalls == 0 && !wkey[useen[2]] -> ugrace[2] = true; stalls = 1; TICK }
#endif
#ifdef BUG1
  /* the old per-ticket keys' TTL (max_hold + 60 s) runs out: the "L" marker is gone */
  :: atomic { claim[1] == LEFT && dl[issuer[1] - 1] >= 1 -> claim[1] = NONE }
  :: atomic { claim[2] == LEFT && dl[issuer[2] - 1] >= 1 -> claim[2] = NONE }
  :: atomic { claim[3] == LEFT && dl[issuer[3] - 1] >= 1 -> claim[3] = NONE }
#endif
  od
}

/* a request is finished, or vanished with its worker (and its deadline + GRACE is past) */
#define QUIET(r) (rstate[r] == R_FINISHED || \
                  (!alive[WORKER(r)] && (rstate[r] != R_HOLDING || dl[r] == 2)))

/* At the quiescent end (every request finished or vanished, the controller done, time run
 * out), the next request or control call runs advance(); then the books must balance. */
active proctype Checker() {
  byte me = CW;
  byte t, g, o, win, undecided;
  bool room;
  atomic {
    ctlDone && QUIET(0) && QUIET(1) && QUIET(2) && !boff && !lock &&
    (lease[1] != L_OUT || lexp[1]) && (lease[2] != L_OUT || lexp[2]) &&
    (lease[3] != L_OUT || lexp[3]) && (lease[4] != L_OUT || lexp[4]) &&
    (lease[5] != L_OUT || lexp[5])
  }
  advance();
  !kick && !lock;
  /* a ticket issued but never written needs a second look, GRACE later */
  (useen[CW] == 0 || ugrace[CW] || wkey[useen[CW]] || claim[useen[CW]] != NONE || useen[CW] <= head);
  advance();
  !kick && !lock;
  /* P4: held counts exactly the tickets no one has decided (0 unless the scope is stopped) */
  undecided = 0;
  t = head + 1;
  do
  :: t <= seq -> if :: claim[t] == NONE -> undecided++ :: else fi; t++
  :: else -> break
  od;
  assert(held == undecided);
  if
  :: !STOPPED(mode) -> assert(head == seq && held == 0 && mode == RUNNING)
  :: else
  fi;
  /* no ticket key outlives its decision */
  t = 1;
  do
  :: t <= head -> assert(!wkey[t]); t++
  :: else -> break
  od;
  /* P3: every lease comes back: by its holder, or (a dead holder's) on expiry when the
   * window next needs room */
  assert(used == OUTSTANDING);
  g = 1;
  do
  :: g <= MAXL -> assert(lease[g] == L_NONE || !alive[WORKER(holder[g] - 1)]); g++
  :: else -> break
  od;
  atomic { !lock -> window = 1; window_has_room(room) }   /* the next paced ticket wants room */
  assert(used == 0 && OUTSTANDING == 0)
}

init {
  atomic {
    run Watcher(0); run Watcher(1);
#ifdef NOR0
    rstate[0] = R_FINISHED;
#else
    run Request(0);
#endif
#ifdef NOR1
    rstate[1] = R_FINISHED;
#else
    run Request(1);
#endif
#ifdef NOR2
    rstate[2] = R_FINISHED
#else
    run Request(2)
#endif
  }
}

/* Liveness (pan -a -f, weak fairness): every held request leaves, and every lease held by
 * a live request is given back. */
#define ALLDONE ((rstate[0] == R_FINISHED || !alive[0]) && (rstate[1] == R_FINISHED || !alive[0]) && \
                 (rstate[2] == R_FINISHED || !alive[1]))
#define LIVELEASES ((lease[1] == L_OUT && alive[holder[1] == 3]) + \
                    (lease[2] == L_OUT && alive[holder[2] == 3]) + \
                    (lease[3] == L_OUT && alive[holder[3] == 3]) + \
                    (lease[4] == L_OUT && alive[holder[4] == 3]) + \
                    (lease[5] == L_OUT && alive[holder[5] == 3]))
ltl leaves  { <> ALLDONE }
ltl leases  { [] (LIVELEASES > 0 -> <> (LIVELEASES == 0)) }
