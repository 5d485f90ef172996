"""Bronze transforms: the lineage columns and row hash every landed row carries."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from custseg.io.sources import SOURCE_FIELDS


def row_hash(fields: tuple[str, ...] = SOURCE_FIELDS) -> F.Column:
    """SHA-256 over all source fields, nulls distinguished from empty text."""
    parts = [F.coalesce(F.col(f), F.lit("\u0000")) for f in fields]
    return F.sha2(F.concat_ws("\u0001", *parts), 256)


def with_lineage(df: DataFrame, batch_id: str, sha256: str) -> DataFrame:
    """Add the lineage columns that bronze keeps for every row."""
    return df.select(
        *SOURCE_FIELDS,
        "source_file",
        F.col("source_row").cast("long").alias("source_row"),
        F.lit(sha256).alias("source_sha256"),
        F.lit(batch_id).alias("batch_id"),
        F.current_timestamp().alias("ingested_at"),
        row_hash().alias("row_hash"),
    )
