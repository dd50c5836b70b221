"""Shared by the isolation scripts (psycopg's and PyMySQL's): the seeded run that picks which
session takes the next step, idles now and then, counts the steps and the mismatches, and ends
with `RESULT {json}` (plus a `FAIL` line per mismatch).

ISO_TRACE=1 prints every statement sent and every mismatch as it happens; ISO_REST=seconds makes
the running session idle that long before about one step in a hundred, so that a sluice that
parks idle sessions parks it and its next statement wakes it with its state.
"""
import json
import os
import random
import sys
import time

TRACE = bool(os.environ.get("ISO_TRACE"))
REST = float(os.environ.get("ISO_REST", "0"))


class Run:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.failures = []
        self.counts = {}

    def count(self, op):
        self.counts[op] = self.counts.get(op, 0) + 1

    def expect(self, who, what, got, want):
        if got != want:
            self.failures.append(f"session {who.n}: {what}: got {got!r}, want {want!r}")
            if TRACE:
                print(f"TRACE FAIL {self.failures[-1]}")

    def drive(self, pool, steps, step, errors, finish=None):
        """`step(session, others)` `steps` times. The same session goes on 60 % of the time:
        its next statement right behind one that dropped what pinned it is where sluice's own
        bookkeeping can fall behind. A driver error (`errors`) ends the run as a mismatch.
        `finish()`, if given, runs its own checks after the last step."""
        s = pool[0]
        for i in range(steps):
            if self.rng.random() < 0.4:
                s = self.rng.choice(pool)
            if REST and self.rng.random() < 0.01:
                self.count("rest")
                time.sleep(REST)
            try:
                step(s, [o for o in pool if o is not s])
            except errors as e:
                self.failures.append(f"session {s.n}, step {i}: {type(e).__name__}: {e}")
                break
        if finish and not self.failures:
            finish()
        print("RESULT " + json.dumps({"steps": steps, "failures": len(self.failures),
                                      "ops": self.counts}))
        for f in self.failures[:40]:
            print("FAIL " + f)
        sys.exit(1 if self.failures else 0)


def trace(n, sql, args):
    if TRACE:
        print(f"TRACE {n}: {sql} {args or ''}")
