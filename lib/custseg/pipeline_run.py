"""One pipeline run: its id, recorded in every table it writes and in MLflow, and the lock that
keeps a second run off the same lakehouse while the first is writing.

A scheduler that runs each stage as its own task passes one ``--run-id`` to all of them (Airflow's
``{{ run_id }}``); otherwise ``custseg run`` makes one. Code that writes without a run (a notebook,
a test) gets one id per process.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from custseg import storage
from custseg.errors import ConfigError, LakehouseBusy

COLUMN = "pipeline_run_id"
LOCK_NAME = "_custseg/run.lock"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")

_current: dict[str, str] = {}


def new_run_id() -> str:
    """``YYYYmmddTHHMMSSZ-`` and six random hex digits: sortable and unique enough."""
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{secrets.token_hex(3)}"


def validate_run_id(run_id: str) -> str:
    """The id unchanged, or a ConfigError naming it (letters, digits and ``._:+-`` only)."""
    if not _ID.match(run_id):
        raise ConfigError(f"--run-id {run_id!r}: use 1-128 letters, digits or ._:+- "
                          "(starting with a letter or digit)")
    return run_id


def current() -> str:
    """The id of the run in progress (one per process when no run was started)."""
    if "id" not in _current:
        _current["id"] = new_run_id()
    return _current["id"]


@contextmanager
def active(run_id: str) -> Iterator[str]:
    """Make ``run_id`` the id every write and MLflow run records until the block ends."""
    before = _current.get("id")
    _current["id"] = validate_run_id(run_id)
    try:
        yield run_id
    finally:
        if before is None:
            _current.pop("id", None)
        else:
            _current["id"] = before


def stamp(df: DataFrame) -> DataFrame:
    """``df`` with the run id as its ``pipeline_run_id`` column (replaced if present)."""
    return df.withColumn(COLUMN, F.lit(current()))


def mlflow_tags(stage: str) -> dict[str, str]:
    """Tags that tie an MLflow run to the pipeline run and stage that made it."""
    return {f"custseg.{COLUMN}": current(), "custseg.stage": stage}


# ---- the lakehouse lock -------------------------------------------------------------------

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
    from custseg import lakehouse

    return f"{lakehouse.normalise_root(root)}/{LOCK_NAME}"


@contextmanager
def lakehouse_lock(
    root: str, run_id: str, command: str, spark: SparkSession | None = None
) -> Iterator[list[str]]:
    """Hold the lakehouse for one run; raise LakehouseBusy when another live run holds it.

    A lock left by a run that was killed on this host (its process is gone) is taken over, and
    the yielded list says so. A lock from another host cannot be checked and is never taken.
    """
    from custseg import lakehouse

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
            f"lakehouse {lakehouse.normalise_root(root)} is in use by run "
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


# ---- stages that already ran on the same inputs --------------------------------------------

STAGE_RUNS = ("ops", "stage_runs")


def stage_key(spark: SparkSession, root: str, inputs: list[tuple[str, str]], **settings: object
              ) -> str:
    """A stage's inputs (table versions) and settings as one JSON string."""
    from custseg import lakehouse

    versions = {f"{layer}/{name}": lakehouse.version(spark, lakehouse.table_path(root, layer, name))
                for layer, name in inputs}
    return json.dumps({"inputs": versions, "settings": settings}, sort_keys=True, default=str)


def completed_by(spark: SparkSession, root: str, stage: str, scope: str, key: str,
                 outputs: list[tuple[str, str]]) -> str | None:
    """The run that last completed ``stage`` for ``scope`` with this very key while its output
    tables still exist, or None: then the stage must run."""
    from custseg import lakehouse

    path = lakehouse.table_path(root, *STAGE_RUNS)
    if not lakehouse.exists(spark, path) or not all(
            lakehouse.exists(spark, lakehouse.table_path(root, *o)) for o in outputs):
        return None
    last = (lakehouse.read(spark, path).where((F.col("stage") == stage) & (F.col("scope") == scope))
            .orderBy(F.col("finished_at").desc()).select("key", COLUMN).first())
    return last[COLUMN] if last is not None and last["key"] == key else None


def record_completion(spark: SparkSession, root: str, stage: str, scope: str, key: str,
                      seconds: float) -> None:
    """Append one row to ``ops/stage_runs`` once every table of the stage is written."""
    from custseg import lakehouse

    row = spark.createDataFrame([(stage, scope, key, float(seconds))],
                                "stage string, scope string, key string, seconds double")
    app_id = f"custseg-{stage}-{scope}-{current()}-{secrets.token_hex(4)}"
    lakehouse.append_once(row.withColumn("finished_at", F.current_timestamp()),
                          lakehouse.table_path(root, *STAGE_RUNS), app_id)
