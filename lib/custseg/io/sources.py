"""Read a retailer's invoice file (xlsx, csv or parquet) into canonical text columns.

Every source field becomes a string column named after the canonical field (``invoice_no``,
``quantity``, ...), so files of any layout land in one bronze schema and parsing happens in
refine, where a bad value is quarantined with a reason instead of failing the load. Typed
source values are written as text losslessly: whole numbers without ``.0``, date-times as
``yyyy-MM-dd HH:mm:ss``. Each row keeps its file and its 1-based data row number (the header
is not counted).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from custseg.config import FIELDS, Config, spark_charset
from custseg.errors import InputError
from custseg.io import storage
from custseg.io.arrow import from_rows
from custseg.io.paths import is_uri
from custseg.io.preflight import detect_format, map_columns
from custseg.runtime import session

SOURCE_FIELDS = FIELDS
TEXT_TS = "yyyy-MM-dd HH:mm:ss"


def check_exists(spark: SparkSession, path: str) -> None:
    """Raise InputError when a remote input is missing (a local one: ``preflight.check_input``)."""
    if not is_uri(path):
        return
    if not storage.for_path(path, spark).exists(path):
        raise InputError(f"{path}: input file not found")


def fingerprint(spark: SparkSession, path: str) -> str:
    """SHA-256 of the input's content (a folder: of its data files in name order).

    Remote inputs are fingerprinted by their listing (name, size, modification time).
    """
    if "://" not in path:
        return local_fingerprint(path)
    digest = hashlib.sha256()
    for name, size, modified in storage.for_path(path, spark).files(path):
        digest.update(f"{name}|{size}|{modified}".encode())
    return digest.hexdigest()


def local_fingerprint(path: str) -> str:
    """``fingerprint`` of a local file or folder, without Spark."""
    digest = hashlib.sha256()
    p = Path(path)
    files = [p] if p.is_file() else sorted(
        f for f in p.rglob("*") if f.is_file() and not f.name.startswith(("_", "."))
    )
    for f in files:
        if f != p:
            digest.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _cell_text(value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.replace(microsecond=0).isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat() + " 00:00:00"
    if isinstance(value, dt.timedelta):
        return str(value)
    return str(value)


def _floats_text(values: Sequence) -> pa.Array:
    """``_cell_text`` of float cells, in bulk: whole numbers below 1e15 as integers, the rest
    by ``repr``, non-finite ones as None."""
    x = pa.array(values, pa.float64()).to_numpy()
    finite = np.isfinite(x)
    whole = finite & (x == np.floor(x)) & (np.abs(x) < 1e15)
    fraction = finite & ~whole
    text = pa.array(np.where(whole, x, 0).astype(np.int64)).cast(pa.string())
    if fraction.any():
        text = pc.replace_with_mask(text, pa.array(fraction), pa.array(
            [repr(v) for v in x[fraction].tolist()], pa.string()))
    return pc.if_else(pa.array(finite), text, pa.scalar(None, pa.string()))


def _datetimes_text(values: Sequence) -> pa.Array:
    """``_cell_text`` of naive date-time cells, in bulk: floored to the second (as dropping
    the microseconds does), ``yyyy-MM-dd HH:mm:ss``."""
    seconds = pa.array(values, pa.timestamp("us")).to_numpy().astype("datetime64[s]")
    iso = pa.array(np.datetime_as_string(seconds, unit="s"), pa.string())
    return pc.utf8_replace_slice(iso, start=10, stop=11, replacement=" ")  # the "T"


def _cells_text(values: Sequence, kind: type) -> pa.Array:
    if kind is float:
        return _floats_text(values)
    if kind is dt.datetime and not any(v.tzinfo for v in values):
        return _datetimes_text(values)
    if kind is str:
        return pa.array([v or None for v in values], pa.string())
    return pa.array([_cell_text(v) for v in values], pa.string())


def _column_text(values: Sequence) -> pa.Array:
    """One column's cells as ``_cell_text`` writes them, a type at a time.

    ``_cell_text`` cell by cell took about 3.4 s of the UCI workbook's read; floats and naive
    date-times, nearly every cell there, are converted in bulk instead (about 1 s in all).
    """
    kinds = list(set(map(type, values)))
    if len(kinds) == 1:
        return _cells_text(values, kinds[0])
    code = {kind: i for i, kind in enumerate(kinds)}
    codes = np.fromiter(map(code.__getitem__, map(type, values)), np.int8, len(values))
    order = np.argsort(codes, kind="stable")  # the cells grouped by type
    grouped = [values[i] for i in order.tolist()]
    ends = np.cumsum(np.bincount(codes, minlength=len(kinds))).tolist()
    parts = [_cells_text(grouped[start:end], kind)
             for kind, start, end in zip(kinds, [0, *ends[:-1]], ends, strict=True)]
    back = np.empty(len(values), np.int64)
    back[order] = np.arange(len(values))
    return pa.concat_arrays(parts).take(pa.array(back))


def _xlsx_table(path: str, cfg: Config) -> pa.Table:
    """The workbook's sheet as canonical text columns and ``source_row`` (no Spark)."""
    from python_calamine import CalamineError, CalamineWorkbook

    try:
        workbook = CalamineWorkbook.from_path(path)
    except (CalamineError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable xlsx workbook ({exc})") from None
    sheet_name = cfg["input"]["sheet"] or workbook.sheet_names[0]
    if sheet_name not in workbook.sheet_names:
        raise InputError(
            f"{path}: sheet '{sheet_name}' not found (sheets: {', '.join(workbook.sheet_names)}); "
            "set input.sheet"
        )
    try:
        rows = workbook.get_sheet_by_name(sheet_name).to_python(skip_empty_area=False)
    except (CalamineError, OSError, ValueError) as exc:
        raise InputError(f"{path}: sheet '{sheet_name}' cannot be read ({exc})") from None
    while rows and all(v in (None, "") for v in rows[-1]):
        rows.pop()
    if not rows:
        raise InputError(f"{path}: sheet '{sheet_name}' is empty (no header row)")
    header = [_cell_text(h) for h in rows[0]]
    mapping = map_columns(path, header, cfg)
    index = {h: i for i, h in enumerate(header) if h is not None}
    data = rows[1:]
    width = max(map(len, rows))
    if any(len(r) < width for r in data):
        data = [r + [None] * (width - len(r)) for r in data]
    columns: dict[str, pa.Array] = {}
    for field in SOURCE_FIELDS:
        src = mapping[field]
        if src is None:
            columns[field] = pa.nulls(len(data), pa.string())
            continue
        columns[field] = _column_text(list(map(itemgetter(index[src]), data)))
    columns["source_row"] = pa.array(range(1, len(data) + 1), pa.int64())
    return pa.table(columns)


@dataclass
class _ReadAhead:
    thread: threading.Thread
    table: pa.Table | None = None
    error: BaseException | None = None


_ahead: dict[tuple, _ReadAhead] = {}


def _file_key(path: str, cfg: Config) -> tuple:
    """The file as it is now (path, size, modification time) and the settings it is read with."""
    st = os.stat(path)
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns,
            json.dumps(cfg["input"], sort_keys=True, default=str))


def read_ahead(path: str, cfg: Config, unless: Callable[[], bool] = lambda: False) -> None:
    """Start reading a local workbook in a thread, for ``read_source`` to take later, unless
    ``unless()`` says it will not be read.

    Reading the UCI workbook is Python work of about 4.5 s, and starting the Spark session
    leaves the driver's Python waiting for about 3 s: side by side, the two were ready about
    1.8 s sooner than one after the other. Any other input is left alone.
    """
    try:
        if is_uri(path) or not os.path.isfile(path) or \
                detect_format(path, cfg["input"]["format"]) != "xlsx" or unless():
            return
        key = _file_key(path, cfg)
    except (InputError, OSError):
        return  # the stage reports it
    if key in _ahead:
        return

    def work() -> None:
        try:
            job.table = _xlsx_table(path, cfg)
        except BaseException as exc:  # noqa: BLE001 (raised again by the stage that reads)
            job.error = exc

    job = _ReadAhead(threading.Thread(target=work, name="custseg-read-ahead", daemon=True))
    _ahead[key] = job
    job.thread.start()


def _take_read_ahead(path: str, cfg: Config) -> pa.Table | None:
    """The table ``read_ahead`` read from this very file with these settings, or None."""
    try:
        job = _ahead.pop(_file_key(path, cfg), None)
    except OSError:
        return None
    if job is None:
        return None
    job.thread.join()
    if job.error is not None:
        raise job.error
    return job.table


def has_read_ahead(path: str, cfg: Config) -> bool:
    """Whether ``read_ahead`` is reading (or has read) this very file for the next read."""
    try:
        return _file_key(path, cfg) in _ahead
    except OSError:
        return False


def drop_read_ahead() -> None:
    """Wait for reads nobody took (an input found already ingested) and forget them."""
    for job in _ahead.values():
        job.thread.join()
    _ahead.clear()


def _read_xlsx(spark: SparkSession, path: str, cfg: Config) -> tuple[DataFrame, int]:
    table = _take_read_ahead(path, cfg)
    if table is None:
        table = _xlsx_table(path, cfg)
    parts = max(1, min(session.parallelism(spark), table.num_rows // 100_000 + 1))
    df = spark.createDataFrame(table).repartition(parts)
    return df.withColumn("source_file", F.lit(path)), table.num_rows


def _as_text(col: Column, dtype: T.DataType) -> Column:
    if isinstance(dtype, T.StringType):
        return F.when(col != "", col)
    if isinstance(dtype, (T.FloatType, T.DoubleType)):
        bad = F.isnan(col) | (F.abs(col) == float("inf"))
        whole = (col == F.floor(col)) & (F.abs(col) < 1e15)
        return (F.when(col.isNull() | bad, F.lit(None))
                .when(whole, col.cast("bigint").cast("string"))
                .otherwise(col.cast("string")))
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        return F.date_format(col, TEXT_TS)
    return col.cast("string")


def _canonical(df: DataFrame, path: str, cfg: Config) -> DataFrame:
    mapping = map_columns(path, df.columns, cfg)
    types = {f.name: f.dataType for f in df.schema.fields}
    cols = []
    for field in SOURCE_FIELDS:
        src = mapping[field]
        if src is None:
            cols.append(F.lit(None).cast("string").alias(field))
        else:
            cols.append(_as_text(F.col(f"`{src}`"), types[src]).alias(field))
    return df.select(*cols, "source_file", "source_row")


def _nanosecond_columns(path: str) -> set[str]:
    """Columns stored as TIMESTAMP(NANOS) (pandas' default), which Spark reads only as longs."""
    if "://" in path:
        return set()
    import pyarrow.parquet as pq

    p = Path(path)
    files = [p] if p.is_file() else sorted(p.rglob("*.parquet"))
    if not files:
        return set()
    schema = pq.read_schema(files[0])
    return {f.name for f in schema if pa.types.is_timestamp(f.type) and f.type.unit == "ns"}


def _read_parquet(spark: SparkSession, path: str, cfg: Config) -> DataFrame:
    nanos = _nanosecond_columns(path)
    if nanos:
        spark.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
    df = spark.read.parquet(path)
    for name in nanos:
        df = df.withColumn(name, F.timestamp_micros(F.floor(F.col(f"`{name}`") / 1000)))
    df = df.select(
        "*",
        F.col("_metadata.file_path").alias("source_file"),
        (F.col("_metadata.row_index") + 1).alias("source_row"),
    )
    return _canonical(df, path, cfg)


def _read_csv(spark: SparkSession, path: str, cfg: Config) -> DataFrame:
    inp = cfg["input"]
    raw = (
        spark.read.option("header", "true").option("inferSchema", "false")
        .option("encoding", spark_charset(inp["encoding"])).option("sep", inp["csv_delimiter"])
        .option("mode", "PERMISSIVE").option("multiLine", "false")
        .csv(path)
        .withColumn("source_file", F.col("_metadata.file_path"))
    )
    if not [c for c in raw.columns if c != "source_file"]:
        raise InputError(f"{path}: empty file (no header row)")
    return _canonical(_numbered(raw), path, cfg)


def _numbered(raw: DataFrame) -> DataFrame:
    """``raw`` plus ``source_row``, each row's 1-based number in its file.

    Row ids number the rows of each scan partition, and a file's partitions come in the order
    of its byte ranges (its full splits first, in order, then the shorter last one). Adding the
    rows of the file's earlier partitions gives file order without sending every row through
    Python (as ``rdd.zipWithIndex`` did: 525,927 lines took 32.9 s to ingest, now 19.7 s).
    One row per (file, partition) reaches the driver.
    """
    ided = raw.withColumn("_id", F.monotonically_increasing_id())
    part = F.shiftright(F.col("_id"), 33).alias("_part")
    # one row per (file, scan partition): bounded by the input's splits, not its rows
    per = (ided.groupBy("source_file", part)
           .agg(F.min("_id").alias("_first"), F.count("*").alias("_n")).collect())
    offsets, seen = [], {}
    for r in sorted(per, key=lambda r: (r["source_file"], r["_part"])):
        before = seen.get(r["source_file"], 0)
        offsets.append((r["source_file"], r["_part"], r["_first"], before))
        seen[r["source_file"]] = before + r["_n"]
    table = from_rows(
        raw.sparkSession, offsets, "source_file string, _part long, _first long, _before long")
    return (ided.withColumn("_part", part).join(F.broadcast(table), ["source_file", "_part"])
            .withColumn("source_row", F.col("_id") - F.col("_first") + F.col("_before") + 1)
            .drop("_id", "_part", "_first", "_before"))


def read_source(
    spark: SparkSession, path: str, cfg: Config
) -> tuple[DataFrame, str, int | None]:
    """The input as canonical text columns plus ``source_file`` and ``source_row``.

    Also returns the format and, when reading already counted them (xlsx), the data rows.
    """
    fmt = detect_format(path, cfg["input"]["format"])
    if fmt == "xlsx":
        if "://" in path:
            raise InputError(f"{path}: xlsx input must be a local file; convert it to parquet")
        df, rows = _read_xlsx(spark, path, cfg)
        return df, fmt, rows
    if fmt == "csv":
        return _read_csv(spark, path, cfg), fmt, None
    return _read_parquet(spark, path, cfg), fmt, None


def check_encoding(df: DataFrame, path: str, encoding: str) -> None:
    """Fail when text did not decode (Spark substitutes U+FFFD for undecodable bytes)."""
    bad = F.lit(False)
    for field in SOURCE_FIELDS:
        bad = bad | F.coalesce(F.col(field).contains("\ufffd"), F.lit(False))
    row = df.filter(bad).select("source_row", *SOURCE_FIELDS).orderBy("source_row").first()
    if row is None:
        return
    column = next(f for f in SOURCE_FIELDS if row[f] and "\ufffd" in row[f])
    raise InputError(
        f"{path}: not valid {encoding} text (first at data row {row['source_row']}, "
        f"column {column}); set input.encoding, e.g. --set input.encoding=latin-1"
    )


_FAILED_READ = re.compile(r"Encountered error while reading file (\S+?)\.?\s")


def read_failure(exc: BaseException, path: str, fmt: str) -> InputError | None:
    """The one-line refusal for a Spark error raised while reading the input file, or None
    when the error is not a read failure (those stay stage failures)."""
    text = str(exc)
    found = _FAILED_READ.search(text)
    if not found:
        return None
    where = re.sub(r"^file:/+", "/", found.group(1))
    causes = [line.split(":", 1)[1].strip() for line in text.splitlines()
              if line.startswith("Caused by:") and ":" in line]
    reason = re.sub(r"^[\w.$]+(Exception|Error):\s*", "", causes[-1]) if causes else ""
    reason = reason or "unreadable content"
    return InputError(f"{where}: cannot be read as {fmt} ({reason}); nothing was written")
