/*
 * intermission: a Promela model of a scope's reclaim racing its ticket takers (spin 6).
 * It follows src/intermission/reclaim.ts (reclaimLocked, createLocked) and release.ts
 * takeTicket(), with one lane (the retry lane is sealed the same way, one more incr).
 *
 *   proctype Taker      release.ts takeTicket(): read the mark, incr(seq); a ticket > 0
 *                       stands; <= 0 (sealed): wait until the key is gone (void) or > 0
 *                       (the seal undone: the ticket t + SEAL stands if the mark is the one
 *                       read before the incr); gone or void: make the scope under its lock
 *                       (createLocked) and take the ticket there. Then the ticket is
 *                       written (w|t) and waits for its decision.
 *   proctype Advancer   release.ts step() under the lock: decides the next ticket once it
 *                       is written (a grant: head and decided move), and then tries the
 *                       reclaim (reclaimLocked) as step() does.
 *   proctype Sweeper    reclaim.ts sweep(): the reclaim under the lock, RECLAIMS times.
 *
 * Each shared-dict operation is one step; the lock is a test-and-set. A scope's keys:
 * mark (its value: the incarnation's base), seq, head, decided; the node's base.
 * Ghosts: inc (the incarnation), the incarnation each taker's incr landed in, and
 * `issued` (ticket numbers ever taken by a request).
 *
 * Properties (assertions; invalid end states: a ticket never decided):
 *   P1  a reclaim deletes no incarnation with a ticket taken and not yet decided;
 *   P2  no ticket number is ever taken twice (a late reader of the earlier one's claim
 *       would read the other's decision);
 *   P3  a ticket a request goes on with was counted by the live incarnation's seq
 *       (the incarnation its incr landed in is the one whose seq exists now).
 * Re-injected bugs (each must give a counterexample):
 *   BUG_NOSEAL     the reclaim deletes after its idle check without sealing (P1);
 *   BUG_NOBASE     a scope made again starts its tickets at 0, not above the node's base (P2);
 *   BUG_NOMARK     a taker whose ticket was sealed takes any positive seq for the seal
 *                  undone, without comparing the mark (P3);
 *   BUG_RESEEN     the seal compares with seq read again after the idle check, not the
 *                  value the check saw (P1; the model found it in the first draft).
 */

#define SEAL 16
#define NT   2          /* takers (requests) */
#ifndef RECLAIMS
#define RECLAIMS 2
#endif
#define MAXN 12         /* ticket numbers tracked by `issued` */

byte base = 0;          /* SEQ_BASE_KEY, never deleted */
bool lock = false;
bool made = false;      /* the mark exists */
byte mark = 0;          /* its value: the incarnation's base */
bool seqx = false;      /* seq exists */
short seq = 0;
byte head = 0;
byte decided = 0;
bool written[MAXN];     /* w|t of the live incarnation */

byte inc = 0;           /* ghost: incarnations made */
byte undecided = 0;     /* ghost: tickets taken in the live incarnation, not yet decided */
bool issued[MAXN];      /* ghost */
byte finished = 0;
byte owner[MAXN];       /* ghost: the taker of a written ticket */
bool got[NT];           /* ghost: its decision came */

inline acquire() { atomic { !lock -> lock = true } }
inline release() { lock = false }

/* reclaim.ts createLocked(), under the lock */
inline create() {
  if
  :: !made ->
     /* the seq key first (a taker's incr counts in it from here on), the mark last */
#ifdef BUG_NOBASE
     d_step { seq = 0; seqx = true; inc++; undecided = 0 };
     head = 0; decided = 0;
#else
     d_step { seq = base; seqx = true; inc++; undecided = 0 };
     head = base; decided = base;
#endif
     d_step { made = true; mark = base }   /* one key: the mark, its value the base */
  :: else -> skip
  fi
}

/* reclaim.ts reclaimLocked(), under the lock */
inline reclaim() {
  short seen, sealed;
  /* The seal compares with the seq the idle check read (BUG_RESEEN: read again). */
  seen = seq;
  if
  :: made && seqx && seen == head && decided == seen ->
#ifdef BUG_RESEEN
     seen = seq;
#endif
#ifndef BUG_NOSEAL
     d_step { seq = seq - SEAL; sealed = seq };
     if
     :: sealed != seen - SEAL -> seq = seq + SEAL   /* a ticket was taken meanwhile: undone */
     :: else ->
#endif
        made = false;
        assert(undecided == 0);                 /* P1 */
        if :: base < seen + 1 -> base = seen + 1 :: else -> skip fi;
        seqx = false;
        byte i; for (i : 0 .. MAXN - 1) { written[i] = false }
#ifndef BUG_NOSEAL
     fi
#endif
  :: else -> skip
  fi
}

proctype Taker(byte me) {
  byte m0, myinc;
  short t;
  bool have = false;
  if
  :: made ->
     m0 = mark;
     if
     :: seqx -> d_step { seq++; t = seq; myinc = inc; if :: t > 0 -> undecided++ :: else -> skip fi }
     :: else -> t = 0; goto locked
     fi;
     if
     :: t > 0 -> have = true
     :: else ->
        /* sealed: wait for the key to go, or to be positive again */
        do
        :: !seqx -> break
        :: seqx && seq > 0 ->
#ifdef BUG_NOMARK
           d_step { have = true; t = t + SEAL; undecided++ }; break
#else
           if
           :: made && mark == m0 -> d_step { have = true; t = t + SEAL; undecided++ }; break
           :: else -> break
           fi
#endif
        od
     fi
  :: else -> skip
  fi;
locked:
  if
  :: !have ->
     acquire();
     create();
     d_step { seq++; t = seq; myinc = inc; undecided++; have = true };
     release()
  :: else -> skip
  fi;
  assert(myinc == inc && seqx && t <= (seq > 0 -> seq : seq + SEAL));   /* P3 (seq may be sealed a moment by a reclaim that undoes it) */
  assert(t > 0 && t < MAXN && !issued[t]);     /* P2 */
  d_step { issued[t] = true; owner[t] = me; written[t] = true };
  /* waits for its decision */
  got[me];
  finished++
}

proctype Advancer() {
end:
  do
  :: acquire();
     if
     :: made && seqx && head < seq && head + 1 < MAXN && written[head + 1] ->
        head++; decided++; undecided--; got[owner[head]] = true
     :: else -> skip
     fi;
     reclaim();
     release()
  od
}

proctype Sweeper() {
  byte n = 0;
  do
  :: n < RECLAIMS -> acquire(); reclaim(); release(); n++
  :: n == RECLAIMS -> break
  od
}

init {
  atomic {
    /* the scope exists, idle, as after a pause and resume */
    acquire(); create(); release();
    run Taker(0); run Taker(1); run Advancer(); run Sweeper()
  }
}
