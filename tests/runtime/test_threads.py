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


def test_the_classic_session_is_found_from_every_thread(spark):
    """The registry picks its classic or Connect route by the session. A classic session is
    not active in a new thread (``getActiveSession`` gives None there), and the route that
    asked for it took the Connect one."""
    from custseg.runtime.session import active_is_classic

    assert threads.run_all([active_is_classic] * 3) == [True, True, True]


class Stop(Exception):
    pass


def _sleeper(spark):
    """A Spark job of one task that sleeps a minute, collected."""
    return spark.range(1).selectExpr(
        f"reflect('java.lang.Thread', 'sleep', cast({SLEEP_MS} as bigint))").collect()


def _python_then_sleeper(spark):
    """Python work first, so that the signal lands before this thread's job is submitted."""
    time.sleep(1.5)
    return _sleeper(spark)


def _job_python_then_sleeper(spark):
    """A short job, Python work, then the long job: the signal lands between the two jobs."""
    spark.range(3).count()
    return _python_then_sleeper(spark)


def _returns_at_once(spark):
    return None


def _active_jobs(spark) -> list[int]:
    """The jobs Spark's status tracker lists as running, once it has caught up: it learns of a
    job's end from the listener bus, after the job's caller has returned. A job that is still
    running (its task sleeps a minute) stays listed."""
    deadline = time.monotonic() + 5
    while (active := list(spark.sparkContext.statusTracker().getActiveJobsIds())) and \
            time.monotonic() < deadline:
        time.sleep(0.1)  # polls the tracker until the bus has delivered the job's end
    return active


@pytest.mark.parametrize(("tasks", "signal_after_s"), [
    ((_sleeper, _sleeper), 2.0),
    ((_sleeper, _python_then_sleeper), 0.5),
    ((_job_python_then_sleeper, _python_then_sleeper), 0.5),
    ((_python_then_sleeper, _returns_at_once), 0.5),
], ids=["both-in-their-jobs", "one-before-its-job", "between-jobs-and-before",
        "the-awaited-one-before-its-job"])
def test_a_signal_while_waiting_cancels_the_jobs_of_every_thread(spark, tasks, signal_after_s):
    """Each thread ends in a Spark job whose task sleeps a minute (or returns at once); a
    signal lands in the waiting thread while the threads are in their jobs, or before a thread
    has submitted its job, among them the thread it was waiting for. The signal's error comes
    out seconds later, not after the minute, and only once every task has returned and no job
    is left running."""

    def on_alarm(signum, frame):
        raise Stop()

    def tracked(task):
        try:
            return task(spark)
        finally:
            returned.append(task)

    returned: list = []
    workers = _workers()
    before = signal.signal(signal.SIGALRM, on_alarm)
    started = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, signal_after_s)
        with pytest.raises(Stop):
            threads.run_all([lambda t=t: tracked(t) for t in tasks])
        running = (len(returned), _workers(), _active_jobs(spark))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
    assert running == (len(tasks), workers, [])
    assert time.monotonic() - started < SLEEP_MS / 1000 / 2
    assert spark.range(5).count() == 5  # the session is still usable
