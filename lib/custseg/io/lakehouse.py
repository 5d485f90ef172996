"""Delta table locations and the few write patterns every stage uses.

Appends are exactly once through Delta itself: they carry a transaction id (``txnAppId``/
``txnVersion``), so a repeated write of the same batch is skipped by Delta. Whether a derived
table needs building at all is decided by ``runtime.memo.materialise``. Every write stamps its
rows and its commit (``userMetadata``) with the pipeline run id.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import DataFrame, DataFrameWriter, SparkSession

from custseg.io import storage
from custseg.io.paths import is_uri, normalise_root, table_path  # noqa: F401 (re-exported)
from custseg.runtime import context, session
from custseg.runtime.threads import run_all

_COMMIT = re.compile(r"(\d{20})\.json")


def version(spark: SparkSession, path: str) -> int | None:
    """Latest committed version of a table, None when no Delta table is at ``path``: the
    highest commit file in its ``_delta_log``, as the storage lists it now.

    A listing takes about a millisecond on a local disk (one LIST on an object store), against
    0.2 to 0.4 s for ``DESCRIBE HISTORY`` in a warm session and a second in a new one, and
    ``memo`` asks for the version of every input of every step. It needs no Spark, so it is the
    same under Spark Connect. (A catalog-managed table's unpublished commits are not listed
    there; custseg's tables are path-based.)
    """
    log = f"{path}/_delta_log"
    found = [int(m.group(1)) for name, _, _ in storage.for_path(log, spark).files(log)
             if (m := _COMMIT.fullmatch(name[len(log) + 1:]))]
    return max(found) if found else None


def exists(spark: SparkSession, path: str) -> bool:
    """True when a Delta table is at ``path``.

    In a classic session Delta's own check answers a yes from the table's log, with no Spark
    job. Its no is not trusted: it comes from the log as this session last read it, so a table
    another process has written since would be missed; the log is listed again for it.
    """
    if session.is_classic(spark):
        from delta.tables import DeltaTable

        if DeltaTable.isDeltaTable(spark, path):
            return True
    return version(spark, path) is not None


def read(spark: SparkSession, path: str) -> DataFrame:
    """The current version of the Delta table at ``path``."""
    return spark.read.format("delta").load(path)


def _overwrite_rows(spark: SparkSession, path: str) -> int | None:
    """The rows the latest commit of the table at ``path`` replaced it with, from the commit's
    own metrics in its log; None unless that commit overwrote the whole table and recorded
    them (``spark.databricks.delta.history.metricsEnabled``, on by default)."""
    latest = version(spark, path)
    if latest is None:
        return None
    text = storage.for_path(path, spark).read_text(f"{path}/_delta_log/{latest:020d}.json")
    for line in (text or "").splitlines():
        commit = json.loads(line).get("commitInfo")
        if commit is None:
            continue
        params = commit.get("operationParameters", {})
        rows = commit.get("operationMetrics", {}).get("numOutputRows")
        whole = (commit.get("operation") == "WRITE" and params.get("mode") == "Overwrite"
                 and "predicate" not in params and "replaceWhere" not in params
                 and params.get("dynamicPartitionOverwrite", "false") != "true")
        return int(rows) if whole and rows is not None else None
    return None


def row_counts(spark: SparkSession, paths: list[str]) -> list[int]:
    """The rows of each table at ``paths``, for a stage's summary of the tables it rebuilt.

    A table its latest commit overwrote whole (``overwrite``) has that commit's own count in
    its log, read with no Spark job; any other is counted, side by side, since a count of a
    small table is mostly a query's fixed cost on the driver (about a second each in a new
    JVM).
    """
    known = [_overwrite_rows(spark, p) for p in paths]
    counted = iter(run_all([lambda p=p: read(spark, p).count()
                            for p, n in zip(paths, known, strict=True) if n is None]))
    return [n if n is not None else next(counted) for n in known]


def size_bytes(spark: SparkSession, path: str) -> int | None:
    """The bytes of the current version's data files (Delta's own figure), None without a
    table."""
    if not exists(spark, path):
        return None
    return int(spark.sql(f"DESCRIBE DETAIL delta.`{path}`").select("sizeInBytes").first()[0])


def _commit_metadata() -> str:
    return json.dumps({context.COLUMN: context.current()}, sort_keys=True)


@contextmanager
def described(spark: SparkSession, text: str) -> Iterator[None]:
    """Name the Spark jobs started inside the block (Spark UI, event logs, bench profiles).
    Over Spark Connect, where there is no SparkContext, the jobs keep the server's names."""
    if not session.is_classic(spark):
        yield
        return
    sc = spark.sparkContext  # classic only (returned above for Connect)
    before = sc.getLocalProperty("spark.job.description")
    sc.setJobDescription(text)
    try:
        yield
    finally:
        sc.setJobDescription(before)  # type: ignore[arg-type]


STATS_DEFAULT = "spark.databricks.delta.properties.defaults.dataSkippingNumIndexedCols"


class _StatsOff:
    """Writes in progress with the stats default at 0, and the session's setting before them."""

    lock = threading.Lock()
    writers = 0
    before: str | None = None


@contextmanager
def _new_tables_without_column_stats(spark: SparkSession) -> Iterator[None]:
    """Tables created inside the block keep row counts but no per-column min/max.

    Delta computes the min and max of the first 32 columns of every row it writes: a third of
    the time of writing bronze at 10x (19.9 s against 14.8 s without). Our reads select by
    partition (batch, as-of date), which needs none; the fact keeps stats on the columns it is
    filtered by (see refine.ensure_fact_table). A table that exists keeps its own setting. The
    session's default is restored for the user's tables when the last of the writes running
    side by side (``memo.materialise_all``) ends, not by the first, which would leave the
    others' new tables with stats.
    """
    with _StatsOff.lock:
        if _StatsOff.writers == 0:
            _StatsOff.before = spark.conf.get(STATS_DEFAULT, None)
            spark.conf.set(STATS_DEFAULT, "0")
        _StatsOff.writers += 1
    try:
        yield
    finally:
        with _StatsOff.lock:
            _StatsOff.writers -= 1
            if _StatsOff.writers == 0:
                if _StatsOff.before is None:
                    spark.conf.unset(STATS_DEFAULT)
                else:
                    spark.conf.set(STATS_DEFAULT, _StatsOff.before)


def _save(writer: DataFrameWriter, df: DataFrame, path: str) -> None:
    context.check_stop()
    name = "/".join(path.rstrip("/").split("/")[-2:])
    with (described(df.sparkSession, f"custseg write {name}"),
          _new_tables_without_column_stats(df.sparkSession)):
        writer.save(path)


def append_once(
    df: DataFrame, path: str, app_id: str, partition_by: list[str] | None = None
) -> None:
    """Append ``df`` unless a commit with this ``app_id`` is already in the table. New columns
    (``pipeline_run_id`` on a table written before it existed) are added, null in old rows."""
    writer = (
        context.stamp(df).write.format("delta").mode("append")
        .option("txnAppId", app_id).option("txnVersion", 1).option("mergeSchema", "true")
        .option("userMetadata", _commit_metadata())
    )
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    _save(writer, df, path)


def overwrite(df: DataFrame, path: str) -> None:
    """Replace the table's contents in one commit (time travel keeps the old versions)."""
    _save(context.stamp(df).write.format("delta").mode("overwrite")
          .option("overwriteSchema", "true").option("userMetadata", _commit_metadata()),
          df, path)


def replace_where(df: DataFrame, path: str, condition: str, partition_by: str) -> None:
    """Replace the rows matching ``condition`` in one commit; other rows are kept, so a table
    keyed by date builds history and a rerun of one date replaces only that date. Columns
    new to the table are added (null in its older rows)."""
    _save(context.stamp(df).write.format("delta").mode("overwrite")
          .option("replaceWhere", condition).option("mergeSchema", "true")
          .option("userMetadata", _commit_metadata())
          .partitionBy(partition_by), df, path)
