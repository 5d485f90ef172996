"""Stages that already ran on the same inputs and settings: ``ops/stage_runs``.

A stage records a key (its input table versions and settings) when every table it writes is
written; a later run with the same key and the outputs still present skips the stage.
"""

from __future__ import annotations

import json
import secrets

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from custseg.io import lakehouse
from custseg.runtime.context import COLUMN, current

STAGE_RUNS = ("ops", "stage_runs")


def stage_key(spark: SparkSession, root: str, inputs: list[tuple[str, str]], **settings: object
              ) -> str:
    """A stage's inputs (table versions) and settings as one JSON string."""
    versions = {f"{layer}/{name}": lakehouse.version(spark, lakehouse.table_path(root, layer, name))
                for layer, name in inputs}
    return json.dumps({"inputs": versions, "settings": settings}, sort_keys=True, default=str)


def completed_by(spark: SparkSession, root: str, stage: str, scope: str, key: str,
                 outputs: list[tuple[str, str]]) -> str | None:
    """The run that last completed ``stage`` for ``scope`` with this very key while its output
    tables still exist, or None: then the stage must run."""
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
    row = spark.createDataFrame([(stage, scope, key, float(seconds))],
                                "stage string, scope string, key string, seconds double")
    app_id = f"custseg-{stage}-{scope}-{current()}-{secrets.token_hex(4)}"
    lakehouse.append_once(row.withColumn("finished_at", F.current_timestamp()),
                          lakehouse.table_path(root, *STAGE_RUNS), app_id)
