"""``lakehouse``: Delta's quick check for a yes, the log's listing for a no and for versions;
counts; stats."""

from __future__ import annotations

import shutil
import threading

from pyspark.errors import AnalysisException

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


def test_row_counts_count_each_table_in_order(spark, tmp_path):
    from pyspark.sql import functions as F

    sizes = [7, 0, 12, 1]
    paths = [str(tmp_path / f"t{i}") for i in range(len(sizes))]
    for n, path in zip(sizes, paths, strict=True):
        spark.range(n).write.format("delta").save(path)
    assert lakehouse.row_counts(spark, paths) == sizes
    # ids below 5: 5, 0, 5 and 1 of them
    assert lakehouse.row_counts(spark, paths, F.col("id") < 5) == [5, 0, 5, 1]
    assert lakehouse.row_counts(spark, []) == []
