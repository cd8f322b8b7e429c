/*
 * intermission: a Promela model of the release protocol (spin 6).
 * It follows src/intermission/release.ts with two lanes and ticket-is-held accounting.
 *
 * What each part mirrors in src/intermission/:
 *   inline settle_lease      release.ts settleLease() (incr(-2^50): exactly one settler)
 *   inline return_lease      release.ts returnLease()
 *   inline reclaim_expired   release.ts reclaimExpired()
 *   inline window_has_room   release.ts windowHasRoom() (back-off, ready gate, window)
 *   inline drain_lane        release.ts drainLane() + decide() + grant() + passOverDead()
 *   inline step              release.ts step()        (the pause TTL / auto-resume is not modelled)
 *   inline advance           release.ts advance()     (the non-blocking lock and the `dirty` re-run)
 *   inline leave             release.ts leave()
 *   inline admit             release.ts admit() (ticket = held; over max_held: leave "L")
 *   proctype Request         gate.ts holdRequest()/retry()/settle(), release.ts admit()/hold()
 *                            (refusedAsLate, the re-queue after "dead"), abandon() from log
 *                            for a killed coroutine, then header_filter/log: returnLease()
 *   proctype Watcher         waiters.ts watcher()/pumpScope(): advance, then post the waiters
 *                            whose ticket the head of their lane has passed (all of them in
 *                            maintenance). advance() ends with the same post of its worker's
 *                            passed waiters (waiters.wakeDue, issue 23): a Watcher turn right
 *                            after it, sooner; it writes nothing shared, so not modelled apart
 *   proctype Controller      state.ts pause()/maintenance()/resume() through withScopeLock()
 *                            and resumeLocked() (stop, window 1, back-off off, ready gate)
 *   proctype Clock           time: deadlines, deadline + GRACE, lease expiry, the back-off,
 *                            the ready probe, the lock's TTL (dead holder), the `unwritten` grace
 *   proctype Killer          worker W1 dies: its coroutines vanish between any two steps,
 *                            inside step() too (its lock then expires)
 *   proctype Checker         the quiescent end: the next request's advance(), then the books
 *
 * Granularity. Lua coroutines of one worker are cooperative (cpu[w]): a coroutine runs
 * until it yields (sema:wait, proxying). Only other workers interleave, at shared-dict
 * operations. Each step below is one or more shared-dict operations that no other worker
 * can tell apart from one: reads of keys that only the lock holder writes are merged with
 * the step that uses them; a claim add is merged with its `decided` incr and a lease settle
 * with its `used` decrement (a worker dying between those two ops is NOT modelled: see
 * model/README.md). Time passes only while no live worker is mid-step or holds the lock,
 * and a deadline does not pass before the worker's watcher polled after the head or the
 * mode moved (poll_interval << max_hold): see `fresh`.
 *
 * Re-injected past bugs (each must give a counterexample):
 *   BUG1  "left" markers carry a TTL, so one expires while a pause freezes the queue and
 *         the ticket is decided again (P1).
 *   BUG8  the watcher wakes granted waiters only while the scope runs: a granted request
 *         is still asleep when its deadline passes (P6, checked by the Clock at the deadline).
 *   BUG_HELDLEAK  the old accounting: admit() does incr(held), hold() then incr(seq), and
 *         the claim winner decrements held; W1 may die in between (P4: held = undecided).
 *   BUG_DEADGRANT  no liveness test: a dead worker's ticket is granted, and its lease comes
 *         back only on expiry (P7: with DEADSLOW the survivor is never released).
 *   BUG_DEADLEASE  the ticket test only: a lease granted before its holder died is not
 *         reclaimed (P7).
 * A dead worker's grant (liveness.ts): w|t and l|g carry the holder's pid and kill(pid, 0)
 * tells a dead worker; here that is alive[] of the issuer's / holder's worker. decide()
 * passes a dead issuer's ticket over ("D") before any window check; windowHasRoom()
 * reclaims dead holders' leases (unused) when the window is still full after
 * reclaimExpired() (the real code looks at most every 0.2 s per worker: not modelled).
 * DEADSLOW: the dead worker's costs must not be what frees the survivors: a dead
 * request's deadline + GRACE and a dead holder's lease expiry come only once the
 * survivors are finished, and the survivors have no deadline (max_hold > about a second);
 * the kill is followed by a watcher poll (time passes). P7: every survivor is released
 * (no invalid end state; LTL leaves).
 *   BUG_FULLFWD   (with FULL) a request whose ticket cannot be written is forwarded, as
 *         0.2.0 did (P5c: nothing is forwarded while the scope is stopped but by a grant).
 *   BUG_FULLCOUNT (with FULL) a request whose "L" cannot be written counts itself decided
 *         and leaves no credit, and a pass over counts every claimless ticket (P4).
 * FULL: the queue zone may refuse a write (FULLMAX times in a run, default 2): a ticket's
 * w|t (admit() gives the ticket up, "L", and answers 503), a request's "L" (leave() counts
 * itself decided and leaves a credit `unclaimed`), the advancer's "D" (passOverDead()
 * spends a credit or counts) and a grant's claim (grant() gives its lease back unused
 * and the head stays). admit() checks max_held before it takes a ticket.
 *   BUG_LONGLEASE  a long-lived lease is freed AND counted as a success for slow start
 *         whether or not any response has started since its grant (a hung upstream, where
 *         every request looks long-lived, would get a burst) : P8a.
 *   BUG_SILENTBUDGET  a lease freed silently (long-lived, nothing answered since its grant)
 *         under the former probe budget (probes < RW), the leases out not counted: more
 *         than release_window requests out unanswered (P8b; checked with -DRW=1).
 *   BUG_FAILANSWER  a gateway failure restores the unanswered budget (probes = 0), as if
 *         it were a response started: a lease freed silently after it grows the window (P9).
 *   BUG_RESUMEFORGET  a resume with no lease out resets the back-off and the unanswered
 *         budget, as the first draft of issue 23's rule did (found by a black-box review: a
 *         pause and resume inside the back-off sent a window's worth into a hung backend).
 *         The ghosts failed and silentOut are observers and are kept: the retried request,
 *         freed silently, grows the window after the failure (P9).
 * P8b: at every grant, leases out + requests freed silently since the last response start
 * <= release_window. P9: after a gateway failure, until a response starts well, the
 * window never grows and a grant leaves exactly one lease out.
 * Switches: NOR0/NOR1/NOR2 (leave a request out), KILL (W1 may die), STALL (R2 may stall
 * GRACE before writing its ticket: it is passed over as dead and queues again), ABORT=r
 * (one client abort), KILLCO=r (the coroutine of r is killed while it sleeps: log runs
 * abandon()), NORETRY (a gateway failure does not send the request to the retry lane),
 * READY (the ready probe gates the release after resume), MAXHELD=n, CTL=1..5, COARSE
 * (see advance), NOFAIL (every upstream answers), DEADEXP (only leases of dead holders
 * expire), DEADSLOW (see above).
 *
 * on_timeout = "reject" throughout; release_window = 2 (RW=n sets it).
 */

#define NR    3      /* held requests: R0, R1 in worker W0, R2 in worker W1 */
#define NW    2      /* workers that hold requests */
#define CW    2      /* the worker that serves the control API (and the Checker's request) */
#define MAXT  4      /* ticket numbers 1..MAXT per lane */
#define MAXL  5      /* lease numbers 1..MAXL */
#ifndef RW
#define RW    2      /* release_window (-DRW=1 for the unanswered budget's check) */
#endif
#ifndef MAXHELD
#define MAXHELD 9
#endif
#ifndef CTL
#define CTL 5      /* every controller sequence (the #else below); 6 is the OUTAGE sequence */
#endif

#define WORKER(r) ((r) == 2 -> 1 : 0)
#define MAIN  0
#define RETRY 1
#define IX(l, t) ((l) * (MAXT + 1) + (t))

/* modes (mode.ts) */
#define RUNNING  0
#define PAUSED   1
#define MAINT    2
#define DRAINING 3
#ifdef OUTAGE
/* An unplanned outage (outage.ts): held like a pause, nothing granted, ended by the
 * prober (outage.finish: resumeLocked only while still in outage) or taken over by an
 * operator's pause. BUG_OUTAGE: the release step does not count it as stopped. */
#define OUTAGE_M 4
#define STOPPED(m) ((m) == PAUSED || (m) == MAINT || (m) == OUTAGE_M)
#ifdef BUG_OUTAGE
#define STEP_STOPPED(m) ((m) == PAUSED || (m) == MAINT)
#else
#define STEP_STOPPED(m) STOPPED(m)
#endif
#else
#define STOPPED(m) ((m) == PAUSED || (m) == MAINT)
#define STEP_STOPPED(m) STOPPED(m)
#endif

/* claim values c|t: absent, "L", "D", or a lease number g (stored as 3 + g; g = 0: unpaced) */
#define NONE 0
#define LEFT 1
#define DEAD 2
#define GRANT(g) (3 + (g))
#define ISGRANT(c) ((c) >= 3)
#define LEASEOF(c) ((c) - 3)

/* lease l|g: absent or outstanding */
#define L_NONE 0
#define L_OUT  1
#define OUTSTANDING ((lease[1] != 0) + (lease[2] != 0) + (lease[3] != 0) + (lease[4] != 0) + (lease[5] != 0))

/* how a lease ends */
#define SUCCESS 0
#define FAILURE 1
#define UNUSED  2
#define LONG    3      /* freed as long-lived, with evidence: a success for slow start */
#define SILENT  4      /* freed as long-lived, nothing answered since its grant, within the budget: grows */
#define EXPIRED 5      /* freed at release_lease, nothing answered since its grant: window 1 */

/* a request's semaphore: not waiting, waiting, woken by post / by its timeout */
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

/* what decide() does with the ticket after the head (step A) */
#define A_STOP  0      /* not decidable now: the lane stops here */
#define A_MOVE  1      /* claimed already: only the head moves */
#define A_DEAD  2      /* passOverDead() */
#define A_GRANT 3      /* grant() */

/* ---- the state zone ---- */
#ifdef OUTAGE
byte mode = OUTAGE_M;        /* the first requests came during an unplanned outage */
#else
byte mode = PAUSED;          /* the scope was paused before the first request came */
#endif
byte seq[2], head[2];
byte stop, used, leaseSeq, leaseOldest;
byte window = 1;
byte decided;                /* `decided`: claims won, both lanes */
#ifdef BUG_HELDLEAK
short held;                  /* the old `held` counter */
#define HELDNOW held
#define COUNT_DECIDED held--
#else
#define HELDNOW (seq[0] + seq[1] - decided)     /* release.heldNow() */
#define COUNT_DECIDED decided++
#endif
/* FULL: the queue zone refuses a write (at most FULLMAX times in a run). */
#ifndef FULLMAX
#define FULLMAX 2
#endif
byte fulls;                  /* refused writes so far */
byte unclaimed;              /* `unclaimed`: credits of requests that counted themselves without a claim */
#ifdef FULL
#define ZONE_REFUSES (fulls < FULLMAX)
#else
#define ZONE_REFUSES false
#endif
/* passOverDead()'s count: a credit is spent instead, if there is one (countPassedOver). */
#ifdef BUG_FULLCOUNT
#define COUNT_PASSED COUNT_DECIDED
#else
#define COUNT_PASSED if :: unclaimed > 0 -> unclaimed-- :: else -> COUNT_DECIDED fi
#endif
bool boff;                   /* now < backoffUntil */
bool rgate;                  /* now < readyUntil (the ready probe has not answered) */
bool lock;                   /* the scope lock (add with LOCK_TTL) */
byte lockOwner;
bool dirty;                  /* `dirty` was bumped since the lock holder read it */

/* ---- long-lived leases (release.ts freeLongLived, noteStarted) ---- */
bool llong[MAXL + 1];        /* l|g has been out longer than longAfter() */
bool lev[MAXL + 1];          /* a response started well since l|g was granted (okAt > granted) */
byte probes;                 /* `probes`: leases freed silently since the last response start (RW - 1 after a failure) */
bool okat;                   /* okAt > 0: noteStarted() since the resume (and since the last failure) */
bool okSeen;                 /* ghost: a response started well since the resume */
byte silentOut;              /* ghost: requests freed silently since the last response start (may hang upstream) */
bool failed;                 /* ghost: a gateway failure since the last response start */
bool bstep;                  /* backoffStep > 0: a gateway failure not yet followed by a good answer */
#define EVID(g) if :: lease[g] == L_OUT -> lev[g] = true :: else fi
#define NOTE_STARTED okat = true; okSeen = true; probes = 0; silentOut = 0; failed = false; EVID(1); EVID(2); EVID(3); EVID(4); EVID(5)
/* noteFailure(): window 1, back-off, room for one request (probes = RW - 1), the evidence
 * voided (okAt = 0: no lease is "long" on a response that started before the failure) */
#ifdef BUG_FAILANSWER
#define FAIL_BUDGET probes = 0          /* BUG: a failure taken as an answer: the budget restored */
#else
#define FAIL_BUDGET probes = RW - 1
#endif
#define NOTE_FAILURE boff = true; bstep = true; window = 1; FAIL_BUDGET; okat = false; failed = true; \
  lev[1] = false; lev[2] = false; lev[3] = false; lev[4] = false; lev[5] = false

/* ---- the queue zone ---- */
bool wkey[2 * (MAXT + 1)];   /* w|t, the ticket's deadline */
byte claim[2 * (MAXT + 1)];  /* c|t */
byte lease[MAXL + 1];        /* l|g */
bool lexp[MAXL + 1];         /* l|g's expiry time has passed */

/* ---- per worker (module state of the Lua VM) ---- */
bool alive[3] = true;
byte cpu[3];                 /* the coroutine that runs in the worker: 0 none, r + 1, WATCHER, CTLR */
#define WATCHER 9
#define CTLR 8
byte waiting[NW];            /* watch.waiting */
bool fresh[NW];              /* the watcher polled since the head or the mode last moved */
byte useen[6];               /* release.ts `unwritten`, per worker and lane: ticket first seen unwritten */
bool ugrace[6];              /* ... and GRACE has passed since */
#define UIX(w, l) ((w) * 2 + (l))

/* ---- per request ---- */
byte dl[NR];                 /* 0: before its deadline, 1: past it, 2: past deadline + GRACE */
byte sem[NR];
bool aborted[NR];
bool rdone[NR];              /* waiter.done */
byte rlane[NR];
byte rticket[NR];
byte rstate[NR];
bool atwrite[NR];            /* between incr(seq) and safe_add(w|t) (STALL) */

/* ---- bookkeeping for the properties (not in the real code) ---- */
byte issuer[2 * (MAXT + 1)]; /* request + 1 that took ticket t */
byte won[2 * (MAXT + 1)];    /* successful adds on c|t */
byte holder[MAXL + 1];       /* request + 1 that was granted lease g */
bool ctlDone;
bit stalls, killedco;

#define WRITING(ix) (issuer[ix] != 0 && alive[WORKER(issuer[ix] - 1)] && atwrite[issuer[ix] - 1])
#define SURVIVORS_DONE (rstate[0] == R_FINISHED && rstate[1] == R_FINISHED)
#ifdef DEADEXP
#define EXPIRES(g) (holder[g] == 0 || !alive[WORKER(holder[g] - 1)])   /* only dead holders' leases expire */
#elif defined(DEADSLOW)
#define EXPIRES(g) (holder[g] == 0 || alive[WORKER(holder[g] - 1)] || SURVIVORS_DONE)   /* P7 */
#else
#define EXPIRES(g) true
#endif
/* liveness.gone(): the worker that wrote ticket k / holds lease g is dead (kill(pid, 0)) */
#ifdef BUG_DEADGRANT
#define ISSUER_GONE(k) false
#else
#define ISSUER_GONE(k) (!alive[WORKER(issuer[k] - 1)])
#endif
#define HOLDER_GONE(g) (holder[g] != 0 && !alive[WORKER(holder[g] - 1)])
#define CLOCK_OK ((!lock || !alive[lockOwner]) && (cpu[0] == 0 || !alive[0]) && (cpu[1] == 0 || !alive[1]) && cpu[2] == 0)
#define GATE(r) (fresh[WORKER(r)] || !alive[WORKER(r)] || waiting[WORKER(r)] == 0)
#define UNFRESH  fresh[0] = false; fresh[1] = false
#define TICK     fresh[0] = false; fresh[1] = false

/* ---------------------------------------------------------------------------------- */

/* settleLease(): the incr(-SETTLE) that finds the lease outstanding is the one settler;
 * its delete, the used decrement and the window/back-off update are merged with it. */
inline settle_lease(g, endk, res) {
  if
  :: lease[g] == L_OUT ->
     lease[g] = L_NONE; lexp[g] = false; holder[g] = 0; llong[g] = false; lev[g] = false;
     assert(used > 0); used--;
     if
     :: endk == FAILURE -> NOTE_FAILURE                         /* noteFailure() */
#ifdef BUG_LONGLEASE
     :: ((endk == SUCCESS && okat) || endk == LONG) && window < RW ->   /* long-lived: a success, whatever answered */
#else
     :: (endk == SUCCESS || endk == LONG) && window < RW && okat ->   /* okAt > 0 */
#endif
        window = RW;                                            /* doubles: 1 -> 2 */
        assert(okSeen);     /* P8a: grown by an answer only once a response started well since the resume */
        assert(!failed)     /* P9: never grown after a gateway failure until a response starts well */
     :: endk == SILENT && window < RW ->                        /* silent: a success for slow start */
        window = RW;
        assert(!failed)     /* P9 */
     :: endk == EXPIRED -> window = 1                           /* out release_lease, nothing answered */
     :: else
     fi;
     if                                                          /* the back-off's step reset by a good answer */
     :: (endk == SUCCESS || endk == LONG) && okat -> bstep = false
     :: else
     fi;
     res = true
  :: else -> res = false
  fi
}

/* freeLongLived(): expired with nothing answered since its grant: window 1; otherwise freed
 * only while fewer than RW are out unanswered (used + probes < RW), as a success for slow
 * start and one more request that may hang upstream (probes++): "long" with evidence (a
 * response started well since its grant: it still counts, for an upstream that answered
 * the requests before it may hang now), "silent" without; with no room it stays (and so
 * do the younger ones), or, with evidence, comes back at release_lease.
 * BUG_SILENTBUDGET: the old probe budget (probes < RW), which ignores the leases out. */
#ifdef BUG_SILENTBUDGET
#define SILENT_ROOM (probes < RW)
#else
#define SILENT_ROOM (used + probes < RW)
#endif
#ifdef BUG_LONGLEASE
#define FREE_LONG(g) settle_lease(g, LONG, res)
#else
#define FREE_LONG(g) \
  if \
  :: !lev[g] && lexp[g] -> settle_lease(g, EXPIRED, res) \
  :: lev[g] && SILENT_ROOM -> \
     probes++; silentOut++; settle_lease(g, LONG, res) \
  :: lev[g] && !SILENT_ROOM && lexp[g] -> settle_lease(g, LONG, res) \
  :: !lev[g] && !lexp[g] && SILENT_ROOM -> \
     probes++; silentOut++; settle_lease(g, SILENT, res) \
  :: else -> break \
  fi
#endif

/* reclaimExpired(): leases are granted in order and all last release_lease; each is
 * long-lived (longAfter()) before it expires. */
inline reclaim_expired() {
  o = leaseOldest;
  do
  :: o < leaseSeq ->
     if
     :: lease[o + 1] == L_OUT && !lexp[o + 1] && !llong[o + 1] -> break   /* now - granted < longAfter() */
     :: lease[o + 1] == L_OUT && (lexp[o + 1] || llong[o + 1]) -> FREE_LONG(o + 1)
     :: else
     fi;
     o++
  :: else -> break
  od;
  leaseOldest = o; o = 0; res = false
}

/* reclaimDead(): leases whose holder's worker is gone come back unused (neither a success
 * nor a failure for the window). */
inline reclaim_dead() {
  o = leaseOldest;
  do
  :: o < leaseSeq ->
     if :: HOLDER_GONE(o + 1) -> settle_lease(o + 1, UNUSED, res) :: else fi;
     o++
  :: else -> break
  od;
  o = 0; res = false
}

/* windowHasRoom()'s window: min(window, unansweredRoom()), unansweredRoom() = max(RW - probes, 1) */
#define UROOM ((RW - probes) > 1 -> (RW - probes) : 1)
#define EFFWIN (window < UROOM -> window : UROOM)
inline window_has_room(room) {
  if
  :: boff || rgate -> room = false               /* now < backoffUntil or readyUntil */
  :: else ->
     room = (used < EFFWIN);
     /* no reclaim_expired() here: step() ran it before its first grant, at the same
      * `now` (a lease it left is not due until time passes, and leases granted since
      * are younger still) */
#if !defined(BUG_DEADGRANT) && !defined(BUG_DEADLEASE)
     if :: !room -> reclaim_dead(); room = (used < EFFWIN) :: else fi
#endif
     skip
  fi
}

/*
 * step() with drainLane(), decide(), grant() and passOverDead(); the caller holds the lock.
 * STEP_READ (merged with the lock's add: keys that only the lock holder writes, and both
 * lanes' seq) reads the mode, reclaims expired leases and starts with the retry lane.
 * Then two steps per ticket: A (q.get(w|t), q.get(c|t), the deadline and window checks,
 * grant()'s modeOf() and the lease's creation) and B (the add on c|t with its decided
 * incr, q.delete(w|t), the head's safe_set). The request's own add ("L") interleaves
 * between A and B. STEP_END (merged with the lock's delete) ends a drained backlog.
 */
#define STEP_READ \
  m = mode; fin = true; \
  if :: !STOPPED(m) && used > 0 -> reclaim_expired() :: else fi; \
  ln = RETRY; s = seq[RETRY]; h = head[RETRY]; sm = seq[MAIN]; \
  if :: h >= s -> ln = MAIN; s = sm; h = head[MAIN] :: else fi

/* The head passed a ticket: a worker's `unwritten` record of it can never match again
 * (it is only compared with head + 1), so it is cleared to keep states apart less. */
#define UCLEAR(ln) \
  if :: useen[UIX(0, ln)] != 0 && useen[UIX(0, ln)] <= h -> useen[UIX(0, ln)] = 0; ugrace[UIX(0, ln)] = false :: else fi; \
  if :: useen[UIX(1, ln)] != 0 && useen[UIX(1, ln)] <= h -> useen[UIX(1, ln)] = 0; ugrace[UIX(1, ln)] = false :: else fi; \
  if :: useen[UIX(2, ln)] != 0 && useen[UIX(2, ln)] <= h -> useen[UIX(2, ln)] = 0; ugrace[UIX(2, ln)] = false :: else fi

#define NEXT_LANE UCLEAR(ln); if :: h >= s && ln == RETRY -> ln = MAIN; s = sm; h = head[MAIN] :: else fi

#define STEP_END \
  if :: m == DRAINING && fin -> mode = RUNNING; UNFRESH :: else fi; \
  m = 0; s = 0; sm = 0; h = 0; ln = 0

inline step_body() {
  do
  :: STEP_STOPPED(m) || h >= s -> break
  :: else ->
     atomic {                                    /* A */
       k = IX(ln, h + 1);
       paced = (ln == RETRY || h + 1 <= stop);
       g = 0;
       if
       :: claim[k] != NONE ->
          /* "L": passed over at once, whatever the window says; a grant or "D" written by
           * an advancer that died before it moved the head stands */
          if :: claim[k] == LEFT -> claim[k] = NONE :: else fi;
          act = A_MOVE
       :: else ->
          if
          :: !wkey[k] ->                         /* issued, not yet written */
             if
             :: useen[UIX(me, ln)] != h + 1 -> useen[UIX(me, ln)] = h + 1; ugrace[UIX(me, ln)] = false; act = A_STOP
             :: else -> act = (ugrace[UIX(me, ln)] -> A_DEAD : A_STOP)
             fi
          :: else ->
             if
             :: dl[issuer[k] - 1] == 2 || ISSUER_GONE(k) -> act = A_DEAD   /* deadline + GRACE < now, or its worker is gone */
             :: else ->
                room = true;
                if :: paced -> window_has_room(room) :: else fi;
                if
                :: !room || STEP_STOPPED(mode) -> act = A_STOP    /* grant() re-reads the mode */
                :: else ->
                   act = A_GRANT;
                   if
                   :: paced ->                   /* incr(leaseSeq); safe_add(l|g); incr(used) */
                      leaseSeq++; g = leaseSeq; assert(g <= MAXL);
                      lease[g] = L_OUT; lexp[g] = false; used++;
                      assert(OUTSTANDING <= RW && used <= RW);  /* P2 */
                      assert(used + silentOut <= RW);           /* P8b: at most RW out unanswered since the last response start */
                      assert(!failed || used == 1)              /* P9: one at a time after a gateway failure */
                   :: else
                   fi
                fi
             fi
          fi
       fi;
       room = false;
       if
       :: act == A_STOP -> fin = false; h = s    /* stop here (the main lane too, after the retry lane) */
       :: act == A_MOVE -> wkey[k] = false; h++; head[ln] = h; UNFRESH; NEXT_LANE
       :: else
       fi
     }
     if
     :: act == A_DEAD || act == A_GRANT ->
     atomic {                                    /* B */
       if
       :: act == A_DEAD ->                       /* passOverDead(): q.safe_add(c|t, "D") */
          if
          :: claim[k] == NONE ->
             if
#ifdef BUG_FULLCOUNT
             :: ZONE_REFUSES -> fulls++; COUNT_DECIDED   /* 0.2.0: "D" not written, counted all the same */
#else
             :: ZONE_REFUSES ->                  /* no room for "D", even after deleting w|t: the head waits */
                fulls++; wkey[k] = false; act = A_STOP; fin = false; h = s
#endif
             :: true -> claim[k] = DEAD; won[k]++; assert(won[k] == 1); COUNT_PASSED
             fi
          :: else -> claim[k] = NONE             /* it left after all */
          fi
       :: act == A_GRANT ->                      /* grant(): q.safe_add(c|t, lease) */
          if
          :: claim[k] == NONE && ZONE_REFUSES ->  /* no room for the claim: the lease back unused, the head stays */
             fulls++;
             if :: g > 0 -> settle_lease(g, UNUSED, res); res = false :: else fi;
             act = A_STOP; fin = false; h = s
          :: claim[k] == NONE ->
             claim[k] = GRANT(g); won[k]++;
             assert(won[k] == 1);                /* P1: a ticket is decided once */
             assert(!STOPPED(mode));             /* P5a: no grant while paused/maintenance/outage */
             holder[g] = (g > 0 -> issuer[k] : 0);
             COUNT_DECIDED
          :: else ->                             /* it left first ("L"): give the lease back, pass it over */
             if :: g > 0 -> settle_lease(g, UNUSED, res); res = false :: else fi;
             claim[k] = NONE
          fi
       :: else
       fi;
       if
       :: act == A_DEAD || act == A_GRANT ->     /* q.delete(w|t); head++; st.safe_set(head) */
          wkey[k] = false; h++; head[ln] = h; UNFRESH; NEXT_LANE
       :: else
       fi;
       k = 0; g = 0; act = 0
     }
     :: else -> k = 0; act = 0
     fi
  od
}

/* advance(): st.incr(dirty); while tryLock() { seen = get(dirty); step(); delete(lock);
 * stop unless get(dirty) moved }. A failed tryLock leaves the bump to the holder. */
#ifdef COARSE
/* (COARSE: one turn of a request's wait loop, and one watcher poll, are one step too.) */
#define C_BEGIN atomic {
#define C_END }
#else
#define C_BEGIN
#define C_END
#endif
#ifdef COARSE
/* COARSE (the two-request configurations): a whole advance() is one step. The lock and the
 * `dirty` re-run, and the races inside step(), are checked by the other configurations. */
inline advance() {
  atomic {
    if
    :: !lock -> dirty = false; STEP_READ; step_body(); STEP_END
    :: else -> dirty = true                      /* only a dead holder's lock, until its TTL */
    fi
  }
}
#else
inline advance() {
  atomic {
    if
    :: !lock -> lock = true; lockOwner = me; dirty = false; go = true; STEP_READ
    :: else -> dirty = true; go = false
    fi
  }
  do
  :: go ->
     step_body();
     atomic {
       STEP_END;
       if
       :: !dirty -> lock = false; go = false
       :: else -> dirty = false; STEP_READ       /* bumped meanwhile: run again */
       fi
     }
  :: else -> break
  od
}
#endif

inline return_lease(g, endk) {
  if
  :: g > 0 ->
     if :: endk == SUCCESS -> atomic { NOTE_STARTED } :: else fi     /* noteStarted() */
     atomic {
       settle_lease(g, endk, res);
       /* freed as long-lived before: its failure backs off all the same */
       if :: !res && endk == FAILURE -> NOTE_FAILURE :: else fi
     }
     if :: res -> res = false; advance() :: else fi
  :: else
  fi
}

/* waiters.done() and leave(): c = the claim that beat "L" (NONE when "L" won) */
#define DONE if :: !rdone[r] -> rdone[r] = true; waiting[me]-- :: else fi

inline leave(ix, c, wr) {                        /* wr: its w|t was written (it was held) */
  atomic {                                       /* q.safe_add(c|t, "L") */
    DONE;
    if
    :: claim[ix] == NONE && ZONE_REFUSES && wr ->   /* no room for "L", even after deleting its own w|t: */
       fulls++; wkey[ix] = false; res = true     /* not counted: the advancer or a grant counts it */
#ifdef BUG_FULLCOUNT
       ; COUNT_DECIDED                           /* 0.2.0: counted here, and again when passed */
#endif
    :: claim[ix] == NONE && ZONE_REFUSES && !wr ->  /* never written (refused): counts itself now */
       fulls++; res = true;
#ifndef BUG_FULLCOUNT
       unclaimed++;                              /* the credit first, then the count */
#endif
       COUNT_DECIDED
    :: claim[ix] == NONE ->
       claim[ix] = LEFT; won[ix]++; assert(won[ix] == 1); res = true;
       COUNT_DECIDED
    :: else ->
       res = false;
       c = claim[ix];                            /* q.get(c|t) ... */
       claim[ix] = NONE                          /* ... q.delete(c|t) */
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
  byte l, t, ix, c, g, e, outcome, woke;
  bool ok, late, over, res, go, fin, paced, room, asleep;
  bool again, wfail;                             /* queued again after "dead"; the zone refused w|t */
  byte m, s, sm, h, k, act, o, ln;
  {
    atomic {                                     /* access(): state.settle(), the mode */
      cpu[me] == 0 -> cpu[me] = r + 1;
      if
      :: mode == RUNNING || mode == MAINT ->     /* forwarded at once, or answered 503 */
         rstate[r] = R_FINISHED; cpu[me] = 0
      :: else -> rstate[r] = R_HOLDING; rdone[r] = true   /* waiters.newWaiter(): done */
      fi
    }
    if :: rstate[r] == R_FINISHED -> goto finish :: else fi;
    l = MAIN;
admit:
    C_BEGIN
    /* admit(lane): t = incr(seq); over max_held: leave at once */
#ifdef BUG_HELDLEAK
    atomic { held++; over = (held > MAXHELD); if :: over -> held-- :: else fi }   /* the old admit() */
    if :: over -> goto answered :: else fi;
requeue:
#else
    /* admit(): max_held before the ticket (atCapacity); a ticket taken again after "dead"
     * (hold()) is not checked: the request was held already */
    atomic { if :: HELDNOW >= MAXHELD && !again -> over = true :: else fi }
    if :: over -> over = false; goto answered :: else fi;
#endif
    if
    :: me == 0 && l == MAIN ->                   /* W0 never dies or stalls: one step to the write */
       atomic {
         seq[l]++; t = seq[l]; assert(t <= MAXT); ix = IX(l, t); issuer[ix] = r + 1;
         rticket[r] = t; rlane[r] = l; again = false;
         over = (HELDNOW > MAXHELD);
         if
         :: !over && ZONE_REFUSES -> fulls++; wfail = true   /* safe_add(w|t): no memory */
         :: !over -> wkey[ix] = true; rdone[r] = false; waiting[me]++
         :: else
         fi
       }
    :: else ->
       atomic {                                  /* incr(seq) */
         seq[l]++; t = seq[l]; assert(t <= MAXT); ix = IX(l, t); issuer[ix] = r + 1;
         rticket[r] = t; rlane[r] = l; atwrite[r] = true; again = false;
         over = (HELDNOW > MAXHELD)
       }
       if
       :: over -> atwrite[r] = false
       :: else ->
          atomic {                               /* safe_add(w|t); track() (STALL: possibly GRACE later) */
            atwrite[r] = false;
            if
            :: ZONE_REFUSES -> fulls++; wfail = true            /* no memory */
            :: true -> wkey[ix] = true; rdone[r] = false; waiting[me]++
            fi
          }
       fi
    fi;
#ifdef BUG_HELDLEAK
    over = false;
#endif
    if
    :: over ->                                   /* admit(): leave the ticket at once, answer "full" */
       leave(ix, c, false); assert(c == NONE); goto answered
    :: wfail ->                                  /* the queue zone is full */
       wfail = false;
#ifdef BUG_FULLFWD
       /* 0.2.0: forwarded. P5c: nothing is forwarded while the scope is stopped but by a grant */
       atomic { assert(!STOPPED(mode)) }
#else
       leave(ix, c, false); assert(!ISGRANT(c)); c = NONE;   /* give the ticket up ("L"), answer 503 */
#endif
       goto answered
    :: else
    fi;
    advance();
    C_END
    outcome = O_TIMEOUT;
    woke = S_IDLE;
    asleep = false;
    do
    :: C_BEGIN
       atomic {
         (!asleep || (cpu[me] == 0 && sem[r] >= S_POSTED)) ->
         if                                      /* resumed: posted or timed out (worker-local) */
         :: asleep -> asleep = false; cpu[me] = r + 1; woke = sem[r]; sem[r] = S_IDLE
         :: else
         fi;
         c = claim[ix];                          /* q.get(c|t) */
         if
         :: ISGRANT(c) ->
            claim[ix] = NONE;                    /* q.delete(c|t) */
            DONE;                                /* waiters.done() */
            g = LEASEOF(c); c = NONE; ok = true;
            late = (dl[r] >= 1 && STOPPED(mode)); /* refusedAsLate(): found at its deadline */
            /* P5b: a request woken by its deadline is never forwarded while the scope is stopped */
            assert(late || !(woke == S_TIMEOUT && STOPPED(mode)))
         :: else
         fi
       }
       if
       :: ok && !late -> ok = false; goto released
       :: ok && late -> ok = false; late = false; return_lease(g, UNUSED); goto answered
       :: c == DEAD -> break
       :: else
       fi;
       atomic {
         if
         :: aborted[r] -> outcome = O_ABORTED; ok = true
         :: else ->
            if
            :: mode == MAINT -> outcome = O_MAINT; ok = true
            :: else -> ok = (dl[r] >= 1)         /* remaining <= 0 */
            fi
         fi;
         if
         :: !ok -> sem[r] = S_WAIT; cpu[me] = 0; asleep = true   /* w.sema.wait(remaining): yields */
         :: else
         fi
       }
       if
       :: ok -> ok = false; break
       :: else
       fi
       C_END
#ifdef KILLCO
    :: atomic { r == KILLCO && !killedco && asleep && cpu[me] == 0 && sem[r] == S_WAIT ->
            killedco = true; cpu[me] = r + 1; sem[r] = S_IDLE; asleep = false }
          /* the coroutine is killed (worker_shutdown_timeout); log runs abandon() */
          leave(ix, c, true);
          if :: ISGRANT(c) -> g = LEASEOF(c); c = NONE; return_lease(g, UNUSED) :: else fi;
          goto answered
#endif
    od;
    C_BEGIN
    leave(ix, c, true);
    if
    :: c == NONE -> goto answered                /* "left" */
    :: ISGRANT(c) ->                             /* granted just as it was leaving */
       atomic {
         g = LEASEOF(c); c = NONE;
         late = (dl[r] >= 1 && STOPPED(mode));   /* refusedAsLate() */
         assert(late || outcome == O_ABORTED || !(woke == S_TIMEOUT && STOPPED(mode)))   /* P5b */
       }
       if
       :: outcome == O_ABORTED || late -> late = false; return_lease(g, UNUSED); goto answered
       :: else -> goto released
       fi
    :: else ->                                   /* "dead": passed over while still here */
       c = NONE;
       atomic {
         wkey[ix] = false;                       /* q.delete(w|t): written after it was passed */
         ok = (outcome == O_TIMEOUT && dl[r] == 0)
       }
       if
#ifdef BUG_HELDLEAK
       :: ok -> ok = false; held++; goto requeue /* the old fix-up: st.incr(held, 1) */
#else
       :: ok -> ok = false; again = true; goto admit   /* queue again: a new ticket, counted held */
#endif
       :: else -> goto answered
       fi
    fi;
    C_END
released:
    atomic { rstate[r] = R_FORWARD; cpu[me] = 0; woke = 0 }   /* proxied upstream: yields */
    C_BEGIN
    atomic {                                     /* header_filter, log or the retry location */
      cpu[me] == 0 -> cpu[me] = r + 1;
      if
      :: e = SUCCESS
#ifndef NOFAIL
      :: e = FAILURE                             /* a gateway failure (502/503/504) */
#endif
      fi
    }
#ifndef NORETRY
    if
    :: e == FAILURE && l == MAIN ->              /* gate.retry(): never sent, so sent again */
       if
       :: g > 0 -> return_lease(g, FAILURE)
       :: else -> atomic { NOTE_FAILURE }        /* noteFailure() */
       fi;
       g = 0; e = 0;
       if
       :: dl[r] == 0 -> rstate[r] = R_HOLDING; l = RETRY; goto admit
       :: else -> goto answered                 /* its time is up: rejected */
       fi
    :: else
    fi;
#endif
    return_lease(g, e);
    C_END
    goto answered;
answered:
    atomic { rstate[r] = R_FINISHED; cpu[me] = 0 }
finish:
    atomic { t = 0; ix = 0; c = 0; g = 0; e = 0; outcome = 0; woke = 0; ok = false; l = 0 }
  } unless { !alive[me] }
}

/* A client goes away while its request sleeps: the on_abort handler sets w.aborted and
 * posts it. One abort per run. */
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

/* waiters.ts pumpScope(): tickets of one lane are listed in ticket order, so walking the
 * list up to the first ticket after the head posts exactly the waiters at or before it. */
#define POST(rr) if :: WORKER(rr) == w && !rdone[rr] && sem[rr] == S_WAIT && \
                        (mode == MAINT || rticket[rr] <= head[rlane[rr]]) -> sem[rr] = S_POSTED :: else fi

proctype Watcher(byte w) {
  byte me = w;
  byte l, m, s, sm, h, k, act, o, g, ln;
  bool res, go, fin, paced, room;
  {
end:
    do
    :: C_BEGIN
       atomic { waiting[w] > 0 && cpu[w] == 0 && !fresh[w] -> cpu[w] = WATCHER }   /* a poll */
       advance();                                /* watch.advance(keys) */
       atomic {
#ifdef BUG8
         if :: mode == PAUSED -> goto polled :: else fi   /* the old watcher: only while running */
#endif
         POST(0); POST(1); POST(2);
#ifdef BUG8
polled:
#endif
         fresh[w] = true;
         cpu[w] = 0                              /* sema:wait(poll_interval) */
       }
       C_END
    :: ctlDone && rstate[0] == R_FINISHED && rstate[1] == R_FINISHED && rstate[2] == R_FINISHED -> break
    od
  } unless { !alive[w] }
}

inline stop_scope(to) {                          /* withScopeLock(stop): writeMode(previous, to) */
  atomic { !lock -> mode = to; UNFRESH }
  advance()
}

inline resume_scope() {                          /* withScopeLock(resumeLocked) */
  atomic {
    !lock ->
    if
    :: STOPPED(mode) ->
       stop = seq[MAIN]; window = 1;
       /* resetLongLived() and the back-off's reset, only when nothing the last release
        * learnt still holds: no lease out, none freed silently since the last response
        * start, no failure without a good answer since, no back-off running */
       if
#ifdef BUG_RESUMEFORGET
       :: used == 0 ->                          /* BUG: the back-off and the budget forgotten */
          okat = false; okSeen = false; probes = 0; bstep = false; boff = false;
          lev[1] = false; lev[2] = false; lev[3] = false; lev[4] = false; lev[5] = false
#else
       :: used == 0 && probes == 0 && !bstep && !boff ->
          okat = false; okSeen = false; probes = 0;
          silentOut = 0; failed = false;
          lev[1] = false; lev[2] = false; lev[3] = false; lev[4] = false; lev[5] = false
#endif
       :: else
       fi;
       if
       :: head[MAIN] < seq[MAIN] || head[RETRY] < seq[RETRY] ->
          mode = DRAINING;
#ifdef READY
          rgate = true;                          /* ready.startWaiting() */
#endif
          skip
       :: else -> mode = RUNNING
       fi;
       UNFRESH
    :: else
    fi
  }
  advance()
}

active proctype Controller() {
  byte me = CW;
  byte l, m, s, sm, h, k, act, o, g, ln;
  bool res, go, fin, paced, room;
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
#elif CTL == 6                                   /* OUTAGE: the resume above is the prober's finish */
  atomic { !lock -> if :: mode == RUNNING -> mode = OUTAGE_M; UNFRESH :: else fi }  /* outage.enter(): from running only */
  advance();
  if
  :: stop_scope(PAUSED)                          /* an operator's pause takes the outage over */
  :: skip
  fi;
  resume_scope();                                /* the prober's finish, or the operator's resume */
#else
  if
  :: stop_scope(PAUSED)                          /* repause */
  :: stop_scope(MAINT)                           /* maintenance */
  :: skip
  fi;
  if
  :: STOPPED(mode) -> resume_scope()
  :: skip
  fi;
#endif
  ctlDone = true
}

active proctype Killer() {
#ifdef KILL
  if
#ifdef DEADSLOW
  :: atomic { alive[1] = false; UNFRESH }        /* ... and W0's watcher polls again later */
#else
  :: alive[1] = false                            /* at any point, inside step() too */
#endif
  :: skip
  fi
#else
  skip
#endif
}

/* A request's deadline passes: a sleeping request is woken by its semaphore's timeout.
 * P6: no request still asleep then has been granted (unless its worker died: nothing wakes
 * a request whose worker is gone, and its lease expires). Its watcher has polled since the head
 * passed its ticket (`fresh`, GATE), so a grant made before the deadline was posted; a
 * granted waiter left asleep would be woken by the deadline instead and, paused again,
 * refused as late (503) instead of forwarded: bug 8. `grantedAsleep` is false whenever
 * P6 holds, so it adds no state. */
#define DEADLINE(rr) \
  dl[rr] = 1; \
  if \
  :: sem[rr] == S_WAIT -> \
     grantedAsleep = (alive[WORKER(rr)] && ISGRANT(claim[IX(rlane[rr], rticket[rr])])); \
     assert(!grantedAsleep); \
     sem[rr] = S_TIMEOUT \
  :: else \
  fi

active proctype Clock() {
  bool grantedAsleep;
end:
  do
  /* deadlines: a sleeping request is woken by its semaphore's timeout (P6 checked there) */
#ifndef DEADSLOW                                 /* DEADSLOW: the survivors' deadlines are far */
  :: atomic { CLOCK_OK && GATE(0) && (rstate[0] == R_HOLDING || rstate[0] == R_FORWARD) && dl[0] == 0 -> DEADLINE(0) }
  :: atomic { CLOCK_OK && GATE(1) && (rstate[1] == R_HOLDING || rstate[1] == R_FORWARD) && dl[1] == 0 -> DEADLINE(1) }
#endif
  :: atomic { CLOCK_OK && GATE(2) && (rstate[2] == R_HOLDING || rstate[2] == R_FORWARD) && dl[2] == 0 -> DEADLINE(2) }
  /* deadline + GRACE: W0 always leaves within GRACE of a deadline, W1 may not (or dies) */
#ifdef DEADSLOW                                  /* a dead R2's deadline + GRACE, once the survivors are done */
  :: atomic { CLOCK_OK && dl[2] == 1 && rstate[2] == R_HOLDING && (alive[1] || SURVIVORS_DONE) -> dl[2] = 2; TICK }
#else
  :: atomic { CLOCK_OK && dl[2] == 1 && rstate[2] == R_HOLDING -> dl[2] = 2; TICK }
#endif
  /* leases expire release_lease after their grant */
  :: atomic { CLOCK_OK && lease[1] == L_OUT && !lexp[1] && EXPIRES(1) -> lexp[1] = true; TICK }
  :: atomic { CLOCK_OK && lease[2] == L_OUT && !lexp[2] && EXPIRES(2) -> lexp[2] = true; TICK }
  :: atomic { CLOCK_OK && lease[3] == L_OUT && !lexp[3] && EXPIRES(3) -> lexp[3] = true; TICK }
  :: atomic { CLOCK_OK && lease[4] == L_OUT && !lexp[4] && EXPIRES(4) -> lexp[4] = true; TICK }
  :: atomic { CLOCK_OK && lease[5] == L_OUT && !lexp[5] && EXPIRES(5) -> lexp[5] = true; TICK }
  /* ... and become long-lived (longAfter(), shorter than release_lease) first */
  :: atomic { CLOCK_OK && lease[1] == L_OUT && !llong[1] && EXPIRES(1) -> llong[1] = true; TICK }
  :: atomic { CLOCK_OK && lease[2] == L_OUT && !llong[2] && EXPIRES(2) -> llong[2] = true; TICK }
  :: atomic { CLOCK_OK && lease[3] == L_OUT && !llong[3] && EXPIRES(3) -> llong[3] = true; TICK }
  :: atomic { CLOCK_OK && lease[4] == L_OUT && !llong[4] && EXPIRES(4) -> llong[4] = true; TICK }
  :: atomic { CLOCK_OK && lease[5] == L_OUT && !llong[5] && EXPIRES(5) -> llong[5] = true; TICK }
  :: atomic { CLOCK_OK && boff -> boff = false; TICK }
  :: atomic { CLOCK_OK && rgate -> rgate = false; TICK }    /* the probe answers, or ready_timeout */
  /* the scope lock's TTL: only a dead holder leaves it set */
  :: atomic { lock && !alive[lockOwner] -> lock = false; TICK }
  /* GRACE passes since an advancer first saw a ticket issued but unwritten, unless a live
   * request is still between incr(seq) and safe_add(w|t) for it (it writes within GRACE;
   * STALL: R2 may not, once) */
  :: atomic { CLOCK_OK && useen[0] != 0 && !ugrace[0] && !WRITING(IX(0, useen[0])) -> ugrace[0] = true; TICK }
  :: atomic { CLOCK_OK && useen[1] != 0 && !ugrace[1] && !WRITING(IX(1, useen[1])) -> ugrace[1] = true; TICK }
  :: atomic { CLOCK_OK && useen[2] != 0 && !ugrace[2] && !WRITING(IX(0, useen[2])) -> ugrace[2] = true; TICK }
  :: atomic { CLOCK_OK && useen[3] != 0 && !ugrace[3] && !WRITING(IX(1, useen[3])) -> ugrace[3] = true; TICK }
  :: atomic { CLOCK_OK && useen[4] != 0 && !ugrace[4] && !WRITING(IX(0, useen[4])) -> ugrace[4] = true; TICK }
  :: atomic { CLOCK_OK && useen[5] != 0 && !ugrace[5] && !WRITING(IX(1, useen[5])) -> ugrace[5] = true; TICK }
#ifdef STALL
  :: atomic { (!lock || !alive[lockOwner]) && (cpu[0] == 0 || !alive[0]) && cpu[2] == 0 && alive[1] &&
       atwrite[2] && stalls == 0 && useen[UIX(0, rlane[2])] == rticket[2] && !ugrace[UIX(0, rlane[2])] ->
       ugrace[UIX(0, rlane[2])] = true; stalls = 1; TICK }
  :: atomic { (!lock || !alive[lockOwner]) && (cpu[0] == 0 || !alive[0]) && cpu[2] == 0 && alive[1] &&
       atwrite[2] && stalls == 0 && useen[UIX(2, rlane[2])] == rticket[2] && !ugrace[UIX(2, rlane[2])] ->
       ugrace[UIX(2, rlane[2])] = true; stalls = 1; TICK }
#endif
#ifdef BUG1
  /* the old per-ticket keys' TTL runs out: the "L" marker is gone */
  :: atomic { claim[1] == LEFT && dl[issuer[1] - 1] >= 1 -> claim[1] = NONE }
  :: atomic { claim[2] == LEFT && dl[issuer[2] - 1] >= 1 -> claim[2] = NONE }
#endif
  od
}

/* a request is finished, or vanished with its worker (and its deadline + GRACE is past) */
#define QUIET(r) (rstate[r] == R_FINISHED || \
                  (!alive[WORKER(r)] && (rstate[r] != R_HOLDING || dl[r] == 2 || rticket[r] == 0 || atwrite[r])))
#define ALLEXPIRED ((lease[1] != L_OUT || lexp[1]) && (lease[2] != L_OUT || lexp[2]) && \
                    (lease[3] != L_OUT || lexp[3]) && (lease[4] != L_OUT || lexp[4]) && (lease[5] != L_OUT || lexp[5]))

/* At the quiescent end (every request finished or vanished, the controller done, time run
 * out), the next request or control call runs advance(); then the books must balance. */
active proctype Checker() {
  byte me = CW;
  byte l, m, s, sm, h, k, act, o, g, ln, t, undecided;
  bool res, go, fin, paced, room;
  atomic { ctlDone && QUIET(0) && QUIET(1) && QUIET(2) && !boff && !rgate && !lock && ALLEXPIRED -> cpu[CW] = CTLR }
  advance();
  /* a ticket issued but never written needs a second look, GRACE later */
  atomic { cpu[CW] = 0 }
  (useen[4] == 0 || ugrace[4] || wkey[IX(0, useen[4])] || useen[4] <= head[0]) &&
  (useen[5] == 0 || ugrace[5] || wkey[IX(1, useen[5])] || useen[5] <= head[1]) && !lock;
  atomic { cpu[CW] = CTLR }
  advance();
#ifdef FULL
  /* FULL: a "D" the zone refused deleted the ticket's w|t: one more look, GRACE later */
  atomic { cpu[CW] = 0 }
  (useen[4] == 0 || ugrace[4] || wkey[IX(0, useen[4])] || useen[4] <= head[0]) &&
  (useen[5] == 0 || ugrace[5] || wkey[IX(1, useen[5])] || useen[5] <= head[1]) && !lock;
  atomic { cpu[CW] = CTLR }
  advance();
#endif
  atomic {
    /* P4: held (tickets issued - decided) counts exactly the tickets no one has decided,
     * 0 unless the scope is stopped */
    undecided = 0;
    l = 0;
    do
    :: l < 2 ->
       t = head[l] + 1;
       do
       :: t <= seq[l] -> if :: claim[IX(l, t)] == NONE -> undecided++ :: else fi; t++
       :: else -> break
       od;
       l++
    :: else -> break
    od;
    /* (a request that counted itself without a claim, FULL, left a credit instead) */
    assert(HELDNOW + unclaimed == undecided);
    if
    :: !STOPPED(mode) -> assert(head[0] == seq[0] && head[1] == seq[1] && HELDNOW == 0 && mode == RUNNING)
    :: else
    fi;
    /* no ticket key outlives its decision */
    t = 1;
    do
    :: t <= head[0] -> assert(!wkey[IX(0, t)]); t++
    :: else -> break
    od;
    t = 1;
    do
    :: t <= head[1] -> assert(!wkey[IX(1, t)]); t++
    :: else -> break
    od;
    /* P3: every lease came back: step() reclaimed the expired ones of dead holders */
    assert(used == OUTSTANDING);
    assert(STOPPED(mode) || (used == 0 && OUTSTANDING == 0));
    cpu[CW] = 0
  }
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
#define LIVE(g) (lease[g] == L_OUT && holder[g] != 0 && alive[holder[g] == 3])   /* R2 is in W1 */
#define LIVELEASES (LIVE(1) + LIVE(2) + LIVE(3) + LIVE(4) + LIVE(5))
ltl leaves  { <> ALLDONE }
ltl leases  { [] (LIVELEASES > 0 -> <> (LIVELEASES == 0)) }
