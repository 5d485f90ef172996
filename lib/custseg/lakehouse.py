"""Delta table locations and the few write patterns every stage uses.

Idempotence comes from Delta itself: appends carry a transaction id (``txnAppId``/``txnVersion``)
so a repeated write of the same batch is skipped by Delta, and derived tables record the versions
of their sources in the commit's ``userMetadata`` so an unchanged input is not rewritten.
"""

from __future__ import annotations

import json
import os
import re

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:/")


def is_uri(path: str) -> bool:
    """True for a URI with a scheme (s3a://, gs://, dbfs:/), False for a local path."""
    return bool(_SCHEME.match(path))


def normalise_root(lakehouse: str) -> str:
    """Absolute local path, or a URI (s3a://, gs://, abfss://, dbfs:/) left as given."""
    if is_uri(lakehouse):
        return lakehouse.rstrip("/")
    return os.path.abspath(lakehouse)


def table_path(lakehouse: str, layer: str, name: str) -> str:
    """``<lakehouse>/<layer>/<name>``."""
    return f"{normalise_root(lakehouse)}/{layer}/{name}"


def exists(spark: SparkSession, path: str) -> bool:
    """True when a Delta table is at ``path``."""
    return DeltaTable.isDeltaTable(spark, path)


def read(spark: SparkSession, path: str) -> DataFrame:
    """The current version of the Delta table at ``path``."""
    return spark.read.format("delta").load(path)


def version(spark: SparkSession, path: str) -> int | None:
    """Latest committed version of a table, or None when there is no table."""
    if not exists(spark, path):
        return None
    row = DeltaTable.forPath(spark, path).history(1).select("version").first()
    return int(row["version"]) if row else None


def last_metadata(spark: SparkSession, path: str) -> dict:
    """The JSON ``userMetadata`` of a table's last commit ({} when absent)."""
    if not exists(spark, path):
        return {}
    row = DeltaTable.forPath(spark, path).history(1).select("userMetadata").first()
    if not row or not row["userMetadata"]:
        return {}
    try:
        return json.loads(row["userMetadata"])
    except ValueError:
        return {}


def append_once(
    df: DataFrame, path: str, app_id: str, partition_by: list[str] | None = None
) -> None:
    """Append ``df`` unless a commit with this ``app_id`` is already in the table."""
    writer = (
        df.write.format("delta").mode("append")
        .option("txnAppId", app_id).option("txnVersion", 1)
    )
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path)


def overwrite(df: DataFrame, path: str, metadata: dict | None = None) -> None:
    """Replace the table's contents in one commit (time travel keeps the old versions)."""
    writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
    if metadata is not None:
        writer = writer.option("userMetadata", json.dumps(metadata, sort_keys=True))
    writer.save(path)
