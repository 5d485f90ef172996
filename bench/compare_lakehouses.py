"""Compare every Delta table of two lakehouses by content, and print one line per table.

    .venv/bin/python bench/compare_lakehouses.py BEFORE AFTER [--digits 9]

Used to show that a change leaves results alone: run the same input through the code before
and after into two lakehouses, then compare. Rows are compared as multisets (``exceptAll`` both
ways, in Spark, so nothing customer-level reaches the driver). Columns that differ by
construction are left out: the run id, the times a row was written, and the source path.
Doubles are rounded to ``--digits`` significant digits. Exit 1 when any table differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from custseg.config import load_config
from custseg.io import lakehouse
from custseg.runtime.session import build_spark

VOLATILE = {"pipeline_run_id", "ingested_at", "refined_at", "finished_at", "generated_at",
            "written_at", "scored_at", "source_file", "seconds", "mlflow_run_id", "run_id"}


def tables(root: str) -> list[str]:
    """``layer/name`` of every Delta table under a local lakehouse root."""
    return sorted(str(p.parent.relative_to(root)) for p in Path(root).glob("*/*/_delta_log"))


def comparable(df: DataFrame, digits: int) -> DataFrame:
    """``df`` without volatile columns, doubles rounded to ``digits`` significant digits."""
    cols = []
    for f in df.schema.fields:
        if f.name in VOLATILE or isinstance(f.dataType, T.TimestampType) and f.name.endswith("_at"):
            continue
        c = F.col(f"`{f.name}`")
        if isinstance(f.dataType, (T.DoubleType, T.FloatType)):
            scale = F.pow(F.lit(10.0), F.lit(digits - 1) - F.floor(F.log10(F.abs(c))))
            c = F.when(c == 0, F.lit(0.0)).otherwise(F.round(c * scale) / scale)
        cols.append(c.alias(f.name))
    return df.select(*cols)


def compare(spark: SparkSession, before: str, after: str, name: str, digits: int) -> str:
    """One line: the table, its rows on each side and whether the contents are equal."""
    a = comparable(lakehouse.read(spark, f"{before}/{name}"), digits)
    b = comparable(lakehouse.read(spark, f"{after}/{name}"), digits)
    if a.columns != b.columns:
        return f"{name}: DIFFERENT columns {sorted(set(a.columns) ^ set(b.columns))}"
    only_a, only_b = a.exceptAll(b).count(), b.exceptAll(a).count()
    verdict = "equal" if only_a == only_b == 0 else f"DIFFERENT ({only_a} / {only_b} rows apart)"
    return f"{name}: {a.count()} / {b.count()} rows, {verdict}"


def main(argv: list[str] | None = None) -> int:
    """Compare the two lakehouses; 0 when every table is equal."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--digits", type=int, default=9)
    args = ap.parse_args(argv)
    spark = build_spark(load_config())
    names_a, names_b = tables(args.before), tables(args.after)
    lines = [f"{n}: only in {'before' if n in names_a else 'after'}"
             for n in sorted(set(names_a) ^ set(names_b))]
    lines += [compare(spark, args.before, args.after, n, args.digits)
              for n in names_a if n in names_b]
    print("\n".join(lines))
    return 0 if all(line.endswith("equal") for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
