"""psycopg pipelines whose transaction fails, from many threads at once (psycopg's own
test_errors_raised_on_commit, in a loop): a failing query, COMMIT raises its error, ROLLBACK,
then more queries in and after the pipeline.

usage: psycopg_pipeline_errors.py HOST PORT DB USER PASSWORD THREADS ITERATIONS
Prints `ABORTED n`, the iterations where psycopg raised PipelineAborted from rollback (a race
inside psycopg: when the failed query's error arrives in a read of its own, commit() raises it
and leaves the aborted COMMIT's result queued for rollback(); it happens on direct connections
too), and `OTHER n` with the first other failures, which must never happen.
"""
import sys
import threading
import traceback

import psycopg
from psycopg import errors as e

host, port, db, user, password, threads, iterations = sys.argv[1:8]
fails = []


def work(tid):
    try:
        with psycopg.connect(host=host, port=port, dbname=db, user=user, password=password,
                             connect_timeout=10) as conn:
            for i in range(int(iterations)):
                try:
                    with conn.pipeline():
                        conn.execute("select 1 from nosuchtable")
                        try:
                            conn.commit()
                            raise AssertionError("commit did not raise")
                        except e.UndefinedTable:
                            pass
                        conn.rollback()
                        cur1 = conn.execute("select %s::int", (i,))
                    cur2 = conn.execute("select 2")
                    if cur1.fetchone() != (i,) or cur2.fetchone() != (2,):
                        raise AssertionError("wrong rows")
                except (psycopg.Error, AssertionError) as exc:
                    fails.append(f"{tid}/{i}: {type(exc).__name__} {exc}")
                    conn.rollback()
    except Exception:
        fails.append(f"{tid}: {traceback.format_exc()}")


workers = [threading.Thread(target=work, args=(t,)) for t in range(int(threads))]
for w in workers:
    w.start()
for w in workers:
    w.join()
aborted = [f for f in fails if "PipelineAborted" in f]
other = [f for f in fails if "PipelineAborted" not in f]
print(f"ABORTED {len(aborted)}")
print(f"OTHER {len(other)}")
for f in other[:10]:
    print(f)
