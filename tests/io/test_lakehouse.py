"""``lakehouse``: Delta's quick check for a yes, the log's listing for a no and for versions;
counts; stats."""

from __future__ import annotations

import shutil
import threading

from pyspark.errors import AnalysisException
from pyspark.sql import functions as F

from custseg.io import lakehouse


def _history_version(spark, path: str) -> int | None:
    """The second method: Delta's own history of the table."""
    try:
        return spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").first()["version"]
    except AnalysisException:
        return None


def test_exists_and_version_answer_as_the_history_query_does(spark, tmp_path):
    table = str(tmp_path / "table")
    spark.range(3).write.format("delta").save(table)
    spark.range(2).write.format("delta").mode("append").save(table)
    spark.range(1).write.format("delta").mode("overwrite").save(table)
    (tmp_path / "plain").mkdir()
    (tmp_path / "empty_log" / "_delta_log").mkdir(parents=True)
    spark.range(3).write.parquet(str(tmp_path / "parquet"))
    cases = {table: 2, str(tmp_path / "missing"): None, str(tmp_path / "plain"): None,
             str(tmp_path / "empty_log"): None, str(tmp_path / "parquet"): None,
             f"{table}/_delta_log": None, f"file://{table}": 2}
    for path, want in cases.items():
        assert _history_version(spark, path) == want, path
        assert lakehouse.version(spark, path) == want, path
        assert lakehouse.exists(spark, path) is (want is not None), path


def test_a_table_another_process_wrote_after_this_session_looked_is_seen(spark, tmp_path):
    """Delta's check keeps the log as this session last read it: it says no here, and the
    log's listing, read again, says yes."""
    path = tmp_path / "later"
    (path / "_delta_log").mkdir(parents=True)
    assert not lakehouse.exists(spark, str(path))
    elsewhere = str(tmp_path / "elsewhere")
    spark.range(4).write.format("delta").save(elsewhere)
    shutil.rmtree(path)
    shutil.copytree(elsewhere, path)  # the table appears without this session writing it
    assert lakehouse.exists(spark, str(path))
    assert lakehouse.version(spark, str(path)) == 0
    assert lakehouse.read(spark, str(path)).count() == 4


def test_column_stats_stay_off_until_the_last_of_overlapping_writes_ends(spark, tmp_path):
    """A write that ends while another is still running must not turn the stats default back
    on under it; the user's default comes back when the last one ends."""
    inside, release = threading.Event(), threading.Event()

    def first() -> None:
        with lakehouse._new_tables_without_column_stats(spark):
            inside.set()
            release.wait(60)

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(60)
    with lakehouse._new_tables_without_column_stats(spark):
        release.set()
        thread.join(60)  # the first write has ended; this one has not
        assert spark.conf.get(lakehouse.STATS_DEFAULT, None) == "0"
    assert spark.conf.get(lakehouse.STATS_DEFAULT, None) is None


def test_row_counts_read_a_whole_overwrite_from_its_commit_and_count_the_rest(spark, tmp_path):
    """Rows worked out from the writes: an overwrite's own figure in its commit, read with no
    Spark job; an append, a partial overwrite or a commit without metrics counted."""
    def write(n, name, mode="overwrite", **options):
        (spark.range(n).withColumn("p", F.lit(1)).write.format("delta").mode(mode)
         .options(**options).partitionBy("p").save(str(tmp_path / name)))
        return str(tmp_path / name)

    whole = [write(7, "a"), write(0, "b"), write(12, "c")]
    write(5, "c")  # overwritten again: 5 rows now, not 12 + 5
    sc = spark.sparkContext
    # setJobGroup sets these three for every later job of this thread (with interruptOnCancel
    # false, which would keep a later test's cancelled tasks running): put them back after
    group = ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel")
    before = {key: sc.getLocalProperty(key) for key in group}
    sc.setJobGroup("row-counts", "the overwrites' counts")
    try:
        assert lakehouse.row_counts(spark, whole) == [7, 0, 5]
        assert sc.statusTracker().getJobIdsForGroup("row-counts") == []
    finally:
        for key, value in before.items():
            sc.setLocalProperty(key, value)
    created = write(3, "created", mode="errorifexists")
    appended = write(4, "appended")
    write(2, "appended", mode="append")  # its commit wrote 2 of the 6 rows
    partial = write(6, "partial")
    write(1, "partial", replaceWhere="p = 1 AND id < 3")  # 1 of 4 rows: 3 replaced by 1
    spark.conf.set("spark.databricks.delta.history.metricsEnabled", "false")
    try:
        silent = write(8, "silent")
    finally:
        spark.conf.unset("spark.databricks.delta.history.metricsEnabled")
    assert lakehouse.row_counts(spark, [created, appended, whole[2], partial, silent]) == [
        3, 6, 5, 4, 8]
    assert lakehouse.row_counts(spark, []) == []
