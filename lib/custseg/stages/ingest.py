"""Bronze: land a source file in ``bronze/raw_invoices`` exactly once, with lineage."""

from __future__ import annotations

import time
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from custseg.config import Config
from custseg.errors import CustsegError, InputError
from custseg.io import lakehouse, sources
from custseg.io.catalog import BRONZE
from custseg.io.paths import is_uri
from custseg.io.preflight import check_input, detect_format
from custseg.io.sources import (
    check_encoding,
    check_exists,
    fingerprint,
    local_fingerprint,
    read_failure,
    read_source,
)
from custseg.runtime.session import quiet_logs
from custseg.runtime.summary import StageSummary
from custseg.transforms.bronze import with_lineage


def _land(spark: SparkSession, input_path: str, bronze: str, batch_id: str, sha256: str,
          cfg: Config) -> tuple[int, float]:
    """Read the input and append it to bronze in one commit; its rows and when reading ended."""
    df, fmt, n = read_source(spark, input_path, cfg)
    if fmt == "csv":
        df = df.cache()  # numbered once, then checked and written
    if n is None:
        n = df.count()
    read_end = time.time()
    if n == 0:
        df.unpersist()
        raise InputError(f"{input_path}: no data rows (only a header)")
    if fmt == "csv":
        check_encoding(df, input_path, cfg["input"]["encoding"])
    lakehouse.append_once(
        with_lineage(df, batch_id, sha256), bronze, f"custseg-ingest-{batch_id}",
        partition_by=["batch_id"],
    )
    df.unpersist()
    return n, read_end


def _batch_id(sha256: str) -> str:
    """A batch's id: the first 16 hex digits of its content's fingerprint."""
    return sha256[:16]


def read_ahead(input_path: str, lakehouse_root: str, cfg: Config) -> None:
    """Start reading a local workbook while the Spark session starts (``sources.read_ahead``),
    unless a local bronze already has a batch of its content."""
    def landed() -> bool:
        if is_uri(lakehouse_root):
            return False
        batch = Path(lakehouse.table_path(lakehouse_root, *BRONZE),
                     f"batch_id={_batch_id(local_fingerprint(input_path))}")
        return batch.is_dir()

    sources.read_ahead(input_path, cfg, unless=landed)


def ingest(spark: SparkSession, input_path: str, lakehouse_root: str, cfg: Config) -> StageSummary:
    """Append the file to bronze unless a file with the same content is already there."""
    start = time.time()
    summary = StageSummary("ingest")
    check_input(input_path, cfg)
    check_exists(spark, input_path)
    sha256 = fingerprint(spark, input_path)
    batch_id = _batch_id(sha256)
    bronze = lakehouse.table_path(lakehouse_root, *BRONZE)
    if lakehouse.exists(spark, bronze):
        done = (lakehouse.read(spark, bronze).where(F.col("batch_id") == batch_id)
                .groupBy().agg(F.count("*").alias("n"), F.min("source_file").alias("f"))
                .first())
        if done and done["n"]:
            summary.rows_out["bronze/raw_invoices"] = 0
            summary.notes.append(
                f"already ingested: same content as {done['f']} (batch {batch_id}, "
                f"{done['n']:,} rows); nothing added"
            )
            summary.seconds = time.time() - start
            return summary
    fmt = detect_format(input_path, cfg["input"]["format"])
    ahead = sources.has_read_ahead(input_path, cfg)
    try:
        with quiet_logs(spark):
            n, read_end = _land(spark, input_path, bronze, batch_id, sha256, cfg)
    except CustsegError:
        raise
    except Exception as exc:  # a corrupt file found while Spark reads it: one line, exit 2
        failure = read_failure(exc, input_path, fmt)
        if failure is None:
            raise
        raise failure from None
    read_seconds = read_end - start
    summary.rows_in = n
    summary.rows_out["bronze/raw_invoices"] = n
    summary.seconds = time.time() - start
    summary.notes.append(f"batch {batch_id} from {input_path} ({fmt})")
    summary.notes.append(
        f"read {read_seconds:.1f} s " + ("(the workbook itself read while the session started)"
                                         if ahead else
                                         f"({n / max(read_seconds, 1e-9):,.0f} rows/s)")
        + f", total {n / max(summary.seconds, 1e-9):,.0f} rows/s")
    return summary
