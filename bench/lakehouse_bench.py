"""Benchmark the lakehouse stages and print a table of figures.

    .venv/bin/python bench/lakehouse_bench.py [--customers N] [--xlsx PATH] [--workdir DIR]

Times: reading the UCI workbook (rows/s of the xlsx reader alone and of the whole ingest), then
generate, ingest, refine, report, segment and clv on N synthetic customers in a fresh
lakehouse. Rows are input lines for ingest, refine and report, customers for segment, and
backtest customers for clv.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from custseg.config import load_config
from custseg.io.generate import generate_to
from custseg.io.sources import read_source
from custseg.runtime.session import build_spark
from custseg.stages.clv import clv
from custseg.stages.dashboard import dashboard
from custseg.stages.ingest import ingest
from custseg.stages.refine import refine
from custseg.stages.report import report
from custseg.stages.segment import segment

REPO = Path(__file__).resolve().parents[1]


def _row(name: str, rows: int, seconds: float) -> str:
    return f"| {name} | {rows:,} | {seconds:.1f} | {rows / max(seconds, 1e-9):,.0f} |"


def main() -> None:
    """Run the benchmark and print the figures as a Markdown table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--xlsx", default=str(REPO.parent / "shared/data/Online_Retail.xlsx"))
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--skip-uci", action="store_true")
    args = ap.parse_args()
    cfg = load_config(overrides=args.set)
    spark = build_spark(cfg)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="custseg-bench-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    parts = cfg["spark"]["shuffle_partitions"]
    lines = [f"machine: {os.cpu_count()} cores; Spark {spark.version}, master "
             f"{spark.sparkContext.master}, shuffle partitions {parts}",
             "", "| step | rows | seconds | rows/s |", "| --- | --- | --- | --- |"]
    if Path(args.xlsx).exists() and not args.skip_uci:
        t = time.time()
        df, _, _ = read_source(spark, args.xlsx, cfg)
        n = df.count()
        lines.append(_row("xlsx read (UCI workbook, to a Spark DataFrame)", n, time.time() - t))
        t = time.time()
        s = ingest(spark, args.xlsx, str(work / "uci"), cfg)
        lines.append(_row("xlsx ingest (read + bronze write)", s.rows_in, time.time() - t))
        t = time.time()
        s = refine(spark, str(work / "uci"), cfg)
        lines.append(_row("refine (UCI)", s.rows_in, time.time() - t))
        t = time.time()
        s = report(spark, str(work / "uci"), cfg)
        lines.append(_row("report (UCI)", s.rows_in, time.time() - t))
    src = str(work / "generated.parquet")
    t = time.time()
    n = generate_to(spark, args.customers, src, seed=1)
    lines.append(_row(f"generate {args.customers:,} customers", n, time.time() - t))
    root = str(work / "gen")
    for name, step in (("ingest", lambda: ingest(spark, src, root, cfg)),
                       ("refine", lambda: refine(spark, root, cfg)),
                       ("report", lambda: report(spark, root, cfg)),
                       ("segment", lambda: segment(spark, root, cfg)),
                       ("clv", lambda: clv(spark, root, cfg)),
                       ("dashboard", lambda: dashboard(spark, root, cfg,
                                                       str(work / "report.html")))):
        t = time.time()
        s = step()
        lines.append(_row(f"{name} ({args.customers:,} customers)", s.rows_in, time.time() - t))
        print("\n".join(s.lines()), flush=True)
    print("\n".join(lines))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
