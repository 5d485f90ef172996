"""The lock that keeps a second run off a lakehouse while the first is writing."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession

from custseg.errors import LakehouseBusy
from custseg.io import storage
from custseg.io.paths import normalise_root

LOCK_NAME = "_custseg/run.lock"


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of a process (guards against a reused pid), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict) -> bool | None:
    """Whether the process that wrote a lock still runs: None when it is on another host."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = int(holder.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = holder.get("proc_start")
    return started is None or _proc_start(pid) in (None, started)


def lock_path(root: str) -> str:
    """Where the lock of a lakehouse lives."""
    return f"{normalise_root(root)}/{LOCK_NAME}"


@contextmanager
def lakehouse_lock(
    root: str, run_id: str, command: str, spark: SparkSession | None = None
) -> Iterator[list[str]]:
    """Hold the lakehouse for one run; raise LakehouseBusy when another live run holds it.

    A lock left by a run that was killed on this host (its process is gone) is taken over, and
    the yielded list says so. A lock from another host cannot be checked and is never taken.
    """
    path = lock_path(root)
    handle = storage.File.at(path, spark)
    pid = os.getpid()
    mine = {"run_id": run_id, "pid": pid, "host": socket.gethostname(),
            "proc_start": _proc_start(pid), "command": command,
            "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    text = json.dumps(mine, sort_keys=True)
    notes: list[str] = []
    for _ in range(3):
        if handle.create(text):
            break
        holder = _read_holder(handle)
        if holder is None:
            continue
        if _alive(holder) is False:
            notes.append(f"took over the lock of run {holder.get('run_id')} "
                         f"(pid {holder.get('pid')} is gone)")
            handle.delete()
            continue
        where = (f"pid {holder.get('pid')} on {holder.get('host')}" if holder
                 else "an unreadable lock")
        raise LakehouseBusy(
            f"lakehouse {normalise_root(root)} is in use by run "
            f"{holder.get('run_id', '?')} ({holder.get('command', '?')}, {where}, since "
            f"{holder.get('since', '?')}); try again when it ends, or delete {path} "
            "if that run is gone")
    else:
        raise LakehouseBusy(f"could not take the lock {path}")
    try:
        yield notes
    finally:
        if _holder(handle.read()) == (run_id, pid):
            handle.delete()


def _parse(raw: str | None) -> dict | None:
    """A lock's text as a dict; None when absent, empty or not a JSON object."""
    try:
        held = json.loads(raw) if raw else None
    except ValueError:
        return None
    return held if isinstance(held, dict) else None


def _read_holder(handle: storage.File, wait: float = 2.0) -> dict | None:
    """The lock's JSON; None when the lock is gone; {} when it stays unreadable for ``wait``
    seconds (a store without atomic create shows the file before its text)."""
    deadline = time.monotonic() + wait
    while True:
        raw = handle.read()
        if raw is None:
            return None
        held = _parse(raw)
        if held is not None:
            return held
        if time.monotonic() >= deadline:
            return {}
        time.sleep(0.1)  # bounded by ``wait``: the writer is between create and write


def _holder(raw: str | None) -> tuple[object, object] | None:
    """(run id, pid) of a lock's text, None when absent or unreadable."""
    held = _parse(raw)
    return (held.get("run_id"), held.get("pid")) if held is not None else None
