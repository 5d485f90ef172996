"""Spark work side by side: results in order, and a stop signal ends every thread's job."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from custseg.runtime import threads

SLEEP_MS = 60_000


def _workers() -> set[threading.Thread]:
    """Live non-daemon threads: run_all's, not Spark's or Py4J's helpers (a joined thread
    can still be listed for a moment, stopped)."""
    return {t for t in threading.enumerate() if not t.daemon and t.is_alive()}


def test_results_come_back_in_the_order_given(spark):
    got = threads.run_all([lambda i=i: spark.range(i * 10).count() for i in range(1, 4)])
    assert got == [10, 20, 30]


def test_a_signal_while_waiting_cancels_the_jobs_of_every_thread(spark):
    """Each thread blocks in a Spark job whose task sleeps a minute; a signal lands in the
    waiting thread after two seconds. The signal's error comes out seconds later, not after the
    minute, and only once both threads and their jobs have ended."""

    class Stop(Exception):
        pass

    def on_alarm(signum, frame):
        raise Stop()

    def sleeper():  # one row, collected
        return spark.range(1).selectExpr(
            f"reflect('java.lang.Thread', 'sleep', cast({SLEEP_MS} as bigint))").collect()

    workers = _workers()
    before = signal.signal(signal.SIGALRM, on_alarm)
    started = time.monotonic()
    try:
        signal.alarm(2)
        with pytest.raises(Stop):
            threads.run_all([sleeper, sleeper])
        running = (_workers(), spark.sparkContext.statusTracker().getActiveJobsIds())
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
    assert running == (workers, [])
    assert time.monotonic() - started < SLEEP_MS / 1000 / 2
    assert spark.range(5).count() == 5  # the session is still usable
