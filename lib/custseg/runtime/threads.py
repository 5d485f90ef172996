"""Independent Spark work in threads: small fits and queries spend most of their time in job
scheduling, not in tasks, so two of them at once keep both cores busy (two GBT fits of 10,000
rows: 26.7 s one after the other, 16.0 s side by side on 2 cores)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
CANCEL_EVERY_S = 0.25


def run_all(tasks: Sequence[Callable[[], T]]) -> list[T]:
    """The results of ``tasks`` run side by side, in order; the first error is raised.

    Threads are pyspark's ``InheritableThread``, so each carries the caller's Spark local
    properties (the stage tag and job descriptions the event logs and the Spark UI show), or
    over Spark Connect the session's tags.
    """
    if len(tasks) <= 1:
        return [task() for task in tasks]
    from pyspark import InheritableThread
    from pyspark.sql import SparkSession

    from custseg.runtime.session import is_classic

    active = SparkSession.getActiveSession()
    remote = {"session": active} if active is not None and not is_classic(active) else {}

    results: list[object] = [None] * len(tasks)
    errors: list[BaseException | None] = [None] * len(tasks)

    returned = [threading.Event() for _ in tasks]

    def runner(i: int) -> Callable[[], None]:
        def run() -> None:
            try:
                if remote:  # pyspark.ml over Connect finds its session as the thread's active one
                    type(active)._set_default_and_active_session(active)
                results[i] = tasks[i]()
            except BaseException as exc:  # re-raised in the caller's thread
                errors[i] = exc
            finally:
                returned[i].set()
        return run

    threads = [InheritableThread(target=runner(i), **remote) for i in range(len(tasks))]
    for thread in threads:
        thread.start()
    try:
        for done in returned:
            done.wait()
    except BaseException:  # a stop signal in the waiting thread: end the others' jobs too
        _cancel_until_done(active, returned)
        _join(threads)
        raise
    _join(threads)
    for error in errors:
        if error is not None:
            raise error
    return results  # type: ignore[return-value]


def _join(threads: Sequence[threading.Thread]) -> None:
    """Wait for threads whose tasks have returned: only pyspark's clean-up is left in them."""
    for thread in threads:
        thread.join()


def _cancel_until_done(spark: object, returned: Sequence[threading.Event]) -> None:
    """Cancel the session's jobs until every task has returned. One cancel is not enough: a
    thread that had not reached its first job when it came, or was between two, submits a job
    after it, and that job would run to its end.

    The tasks tell that they returned by an event, not by ``Thread.is_alive``: a ``join`` that
    a signal interrupts marks the thread it waited for as ended while it still runs (CPython
    issue 90882, Python 3.11), so that thread's next job escaped the cancels."""
    while waiting := [done for done in returned if not done.is_set()]:
        _cancel(spark)
        waiting[0].wait(CANCEL_EVERY_S)


def _cancel(spark: object) -> None:
    """Cancel the session's running Spark jobs, so that threads blocked in them return."""
    from custseg.runtime.session import is_classic

    if spark is None:
        return
    if is_classic(spark):
        spark.sparkContext.cancelAllJobs()  # type: ignore[attr-defined]
    else:
        spark.interruptAll()  # type: ignore[attr-defined]
