"""The id of one pipeline run, recorded in every table it writes and in MLflow.

A scheduler that runs each stage as its own task passes one ``--run-id`` to all of them (Airflow's
``{{ run_id }}``); otherwise ``custseg run`` makes one. Code that writes without a run (a notebook,
a test) gets one id per process.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from custseg.errors import ConfigError, Terminated

COLUMN = "pipeline_run_id"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")

_current: dict[str, str] = {}
_stop: list[str] = []


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


def request_stop(reason: str) -> None:
    """Remember that the run must stop (SIGTERM), for ``check_stop`` at the next commit.

    A signal handler's exception does not always get out: when it lands while Py4J is
    sending a command, Py4J takes it for a network error and sends the command again, and
    the run carries on."""
    _stop.append(reason)


def stop_requested() -> str | None:
    """Why the run must stop, or None."""
    return _stop[0] if _stop else None


def check_stop() -> None:
    """Raise ``Terminated`` if a stop was requested: called before each commit and stage."""
    if _stop:
        raise Terminated(_stop[0])


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
