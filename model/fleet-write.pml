/*
 * The fleet's control write (src/intermission/fleet/remote.ts change() and settle(),
 * control.ts mutate(), fleet/unsettled.ts, cli/run.ts): a change sent to Redis whose answer
 * may not come, and what the node then tells its client.
 *
 * Redis runs one command at a time, each script wholly (atomic below), but it takes the
 * connections in any order: a command sent on a connection the node has given up on (read
 * timeout, then close) can run at any later moment, before or after commands the node
 * sends afterwards on fresh connections, or never (lost before Redis read it). Each
 * connection carries one command here, so "any order" is Redis choosing any non-empty
 * connection.
 *
 * Processes:
 *   Client  the CLI's run: POST pause (change P) through a node; answered "applied" it runs
 *           its command under the pause (the pause must be there) and resumes; answered
 *           "unknown" it resumes at once (change R, through the same node, which fences P:
 *           fleet/unsettled.ts); answered "not applied" it stops.
 *   Redis   serves the connections in any order, or loses a command.
 *   Check   once the client is done and Redis has taken every command: the answers agree
 *           with what Redis ended up with.
 * The node's part is the inline change(): send the change; take its answer or time out; on
 * a timeout settle it, on up to SETTLES fresh connections, each of which may time out too;
 * none answered: "unknown".
 *
 * -DBUG_UNCERTAIN: 0.2.0's node, which took a timeout for "not written".
 * -DBUG_NOFENCE: the resume after an unknown pause does not fence it.
 */

#ifndef SETTLES
#define SETTLES 2
#endif
#define NCONN (2 * (1 + SETTLES))

/* change ids */
#define P 1	/* the pause */
#define R 2	/* the resume */
/* what a change id's key in Redis says (<prefix>:change:<id>) */
#define NONE 0
#define APPLIED 1
#define CANCELLED 2
/* commands and their replies */
#define K_CHANGE 1
#define K_SETTLE 2
#define R_APPLIED 1
#define R_CANCELLED 2
/* the node's answer to its client */
#define A_NONE 0
#define A_APPLIED 1
#define A_NOT 2
#define A_UNKNOWN 3

byte fate[3];		/* per change id */
bit paused;		/* the scope's record in Redis: paused, or absent (running) */
byte ansP, ansR;	/* what the node answered for P and R */
bool done;		/* the client has finished */

chan conn[NCONN] = [1] of { byte, byte, byte };	/* kind, id, id to fence (0: none) */
chan reply[NCONN] = [1] of { byte };

/* CHANGE: fence the earlier unknown change first; refuse if this id is fenced; else apply. */
inline runChange(id, fence, result) {
	if
	:: fence != 0 && fate[fence] == NONE -> fate[fence] = CANCELLED
	:: else -> skip
	fi;
	if
	:: fate[id] == CANCELLED -> result = R_CANCELLED
	:: else -> paused = (id == P -> 1 : 0); fate[id] = APPLIED; result = R_APPLIED
	fi
}

/* SETTLE: the version if applied, else fence the id for good. */
inline runSettle(id, result) {
	if
	:: fate[id] == APPLIED -> result = R_APPLIED
	:: else -> fate[id] = CANCELLED; result = R_CANCELLED
	fi
}

/* Redis takes connection n's command: runs it and answers, or the command is lost. */
#define SERVE(n) \
	:: atomic { conn[n]?kind, id, fence -> \
		if \
		:: kind == K_CHANGE -> runChange(id, fence, result); reply[n]!result \
		:: kind == K_SETTLE -> runSettle(id, result); reply[n]!result \
		:: true -> skip /* lost before Redis read it */ \
		fi }

active proctype Redis() {
	byte kind, id, fence, result;
end:
	do
	SERVE(0)
	SERVE(1)
	SERVE(2)
	SERVE(3)
	SERVE(4)
	SERVE(5)
	od
}

/* The node: change `id` on connection c0 (settles on c0+1 .. c0+SETTLES); the answer in ans. */
inline change(id, fence, c0, ans) {
	conn[c0]!K_CHANGE, id, fence;
	if
	:: reply[c0]?r -> ans = (r == R_APPLIED -> A_APPLIED : A_NOT)
	:: true ->	/* read timeout: the command may still run */
#ifdef BUG_UNCERTAIN
		ans = A_NOT
#else
		k = 1;
		do
		:: k <= SETTLES ->
			conn[c0 + k]!K_SETTLE, id, 0;
			if
			:: reply[c0 + k]?r -> ans = (r == R_APPLIED -> A_APPLIED : A_NOT); break
			:: true -> k++	/* this one timed out too */
			fi
		:: else -> ans = A_UNKNOWN; break
		od
#endif
	fi
}

active proctype Client() {
	byte r, k;
	change(P, 0, 0, ansP);
	/* "applied": it is there now, and the command runs under it */
	assert(ansP != A_APPLIED || (fate[P] == APPLIED && paused));
	if
	:: ansP == A_APPLIED -> change(R, 0, 1 + SETTLES, ansR)
	:: ansP == A_UNKNOWN ->
#ifdef BUG_NOFENCE
		change(R, 0, 1 + SETTLES, ansR)
#else
		change(R, P, 1 + SETTLES, ansR)
#endif
	:: ansP == A_NOT -> skip
	fi;
	done = true
}

/* Once everything sent has been run or lost: the answers were true. */
active proctype Check() {
	(done && empty(conn[0]) && empty(conn[1]) && empty(conn[2]) && empty(conn[3]) &&
	 empty(conn[4]) && empty(conn[5]));
	assert(NCONN == 6);
	/* "not applied" is for good: the change never ran, and never will */
	assert(ansP != A_NOT || fate[P] != APPLIED);
	assert(ansR != A_NOT || fate[R] != APPLIED);
	assert(ansP != A_APPLIED || fate[P] == APPLIED);
	/* a resume answered "applied" is the last word: no late pause lands after it */
	assert(ansR != A_APPLIED || !paused)
}
