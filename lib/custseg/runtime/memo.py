"""The one way custseg decides a table is already built: ``materialise``.

A step names the tables it reads, the settings it uses and the tables it writes. Its key is the
versions of those inputs and the settings; once every output is written the key is recorded in
``ops/stage_runs``, and a later step with the same key, whose outputs still exist, is skipped.
Appends of new data (ingest, refine) are a different thing: they are made exactly once by Delta
transaction ids on the write itself (``lakehouse.append_once``), not skipped by a key.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from custseg.io import lakehouse, storage
from custseg.io.arrow import from_rows
from custseg.runtime.context import COLUMN, current
from custseg.runtime.threads import run_all

STAGE_RUNS = ("ops", "stage_runs")
Table = tuple[str, str]


@dataclass(frozen=True)
class Step:
    """What a build reads, uses and writes; ``scope`` tells its runs apart (an as-of date, a
    report's name). ``files`` are outputs outside the tables (the dashboard's page)."""

    stage: str
    scope: str
    inputs: Sequence[Table]
    outputs: Sequence[Table]
    settings: Mapping[str, object] = field(default_factory=dict)
    files: Sequence[str] = ()


def _key(step: Step, versions: Mapping[Table, int | None]) -> str:
    used = {f"{layer}/{name}": versions[(layer, name)] for layer, name in step.inputs}
    return json.dumps({"inputs": used, "settings": dict(step.settings)}, sort_keys=True,
                      default=str)


def _last_runs(spark: SparkSession, root: str, steps: Sequence[Step]
               ) -> dict[tuple[str, str], tuple[str, str]]:
    """(stage, scope) -> (key, run id) of the last recorded run of each step: one small read."""
    path = lakehouse.table_path(root, *STAGE_RUNS)
    if not lakehouse.exists(spark, path):
        return {}
    wanted = F.lit(False)
    for step in steps:
        wanted = wanted | ((F.col("stage") == step.stage) & (F.col("scope") == step.scope))
    last = F.max_by(F.struct("key", COLUMN), "finished_at")
    rows = (lakehouse.read(spark, path).where(wanted).groupBy("stage", "scope")
            .agg(last.alias("last")).collect())  # one row per step: a handful
    return {(r["stage"], r["scope"]): (r["last"]["key"], r["last"][COLUMN]) for r in rows}


def materialise_all(spark: SparkSession, root: str,
                    work: Sequence[tuple[Step, Callable[[str], None]]]) -> list[str | None]:
    """Build each step whose key differs from its last recorded run (or whose outputs are
    gone), then record the built ones in one commit. The builds run side by side: each is a
    few small Spark jobs and a Delta commit, mostly fixed cost rather than work.

    ``build`` gets the step's key. Returns, per step, the run id that had already built it with
    this key, or None when it was built now. A run stopped half way records nothing, so its
    steps are built again next time (every build replaces what it writes).
    """
    inputs = {t for step, _ in work for t in step.inputs}
    versions = {t: lakehouse.version(spark, lakehouse.table_path(root, *t)) for t in inputs}
    last = _last_runs(spark, root, [step for step, _ in work])
    done: list[str | None] = []
    todo: list[tuple[Step, Callable[[str], None], str]] = []
    for step, build in work:
        key = _key(step, versions)
        held = last.get((step.stage, step.scope))
        if held is not None and held[0] == key and all(
                lakehouse.exists(spark, lakehouse.table_path(root, *o)) for o in step.outputs
        ) and all(storage.for_path(f, spark).exists(f) for f in step.files):
            done.append(held[1])
            continue
        todo.append((step, build, key))
        done.append(None)

    def timed(step: Step, build: Callable[[str], None], key: str
              ) -> tuple[str, str, str, float]:
        start = time.time()
        build(key)
        return step.stage, step.scope, key, time.time() - start

    built = run_all([lambda s=s, b=b, k=k: timed(s, b, k) for s, b, k in todo])
    if built:
        _record(spark, root, built)
    return done


def materialise(spark: SparkSession, root: str, step: Step, build: Callable[[str], None]
                ) -> str | None:
    """``materialise_all`` for one step: the run that already built it, or None."""
    return materialise_all(spark, root, [(step, build)])[0]


def replace_tables(
    spark: SparkSession, root: str, stage: str, layer: str,
    tables: Mapping[str, tuple[Sequence[Table], Mapping[str, object], Callable[[], DataFrame]]],
) -> dict[str, str | None]:
    """``materialise_all`` for tables each replaced whole by one DataFrame (the reports, the
    dimensions): name -> (inputs, settings, build). Returns name -> the run that had already
    built it, or None when it was built now."""
    work = []
    for name, (inputs, settings, make) in tables.items():
        path = lakehouse.table_path(root, layer, name)
        step = Step(stage, name, inputs=inputs, outputs=[(layer, name)], settings=settings)
        work.append((step, lambda _key, make=make, path=path: lakehouse.overwrite(make(), path)))
    return dict(zip(tables, materialise_all(spark, root, work), strict=True))


def _record(spark: SparkSession, root: str, rows: list[tuple[str, str, str, float]]) -> None:
    """Append the completed steps to ``ops/stage_runs`` in one commit."""
    table = from_rows(spark, rows, "stage string, scope string, key string, seconds double")
    app_id = f"custseg-{rows[0][0]}-{current()}-{secrets.token_hex(4)}"
    lakehouse.append_once(table.withColumn("finished_at", F.current_timestamp()),
                          lakehouse.table_path(root, *STAGE_RUNS), app_id)
