"""``custseg STAGE``: the command line for every stage and for the whole pipeline."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from itertools import pairwise
from typing import TYPE_CHECKING

from custseg.config import Config, load_config
from custseg.errors import (
    EXIT_BAD_INPUT,
    EXIT_BUSY,
    EXIT_DRIFT,
    EXIT_OK,
    EXIT_STAGE_FAILED,
    EXIT_TERMINATED,
    CustsegError,
    Terminated,
)
from custseg.io.catalog import BRONZE, FACT
from custseg.runtime.summary import StageSummary

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from custseg.stages.audiences import Filters

# report after segment: report_customers carries the segments (catalog.REPORT_INPUTS)
PIPELINE = ("ingest", "refine", "segment", "report", "clv", "audiences", "drift", "dashboard")
# Local property on every Spark job of a stage, so event logs and the Spark UI tell stages apart.
STAGE_PROPERTY = "custseg.stage"
MLFLOW_STAGES = ("segment", "clv", "drift")


def log(stage: str, message: str) -> None:
    """One timestamped line on stdout, tagged with the stage."""
    now = dt.datetime.now().isoformat(sep=" ", timespec="seconds")
    print(f"{now} [{stage}] {message}", flush=True)


def _print_summary(summary: StageSummary) -> None:
    now = dt.datetime.now().isoformat(sep=" ", timespec="seconds")
    for line in summary.lines():
        print(f"{now} {line}", flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="custseg",
        description="Customer segmentation and lifetime value on Spark and Delta Lake.",
        epilog=f"exit codes: {EXIT_OK} success, {EXIT_STAGE_FAILED} a stage failed, "
               f"{EXIT_BAD_INPUT} bad input or configuration, {EXIT_DRIFT} drift beyond "
               f"thresholds (--fail-on-drift), {EXIT_BUSY} another run holds the lakehouse, "
               f"{EXIT_TERMINATED} stopped by SIGTERM")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    helps = {
        "ingest": "land an invoice file in bronze/raw_invoices (exactly once)",
        "refine": "parse, deduplicate and route bronze rows into the silver star schema",
        "report": "rebuild the gold reporting tables from silver",
        "segment": "RFM scores, named segments and KMeans clusters as of a date (MLflow)",
        "clv": "next-period spend and value tier: GBT models backtested against baselines",
        "drift": "compare an as-of date with the one before: migration, PSI, cluster stability",
        "audiences": "the configured audiences to gold/audiences (and files when export.dir "
                     "is set)",
        "dashboard": "write the marketer's dashboard (one self-contained HTML file)",
        "export": "write one audience's customers to a CSV or parquet file",
        "run": "all stages in order: " + ", ".join(PIPELINE),
    }
    for name, text in helps.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--lakehouse", required=True, help="lakehouse root (folder or URI)")
        p.add_argument("--input", help="invoice file: .xlsx, .csv or .parquet (file or folder)")
        p.add_argument("--conf", help="YAML file overriding conf/defaults.yaml")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one configuration key, e.g. spark.shuffle_partitions=8")
        p.add_argument("--run-id", help="pipeline run id recorded in every table and MLflow "
                                        "run (a scheduler passes one id to all its tasks; "
                                        "default: a new UTC timestamp id)")
        p.add_argument("--verbose", action="store_true",
                       help="show Spark's and MLflow's own log on the console (default: in "
                            "<lakehouse>/_custseg/logs/<run id>.log)")
        p.add_argument("--remote", metavar="sc://HOST:PORT",
                       help="run through a Spark Connect server (same as spark.remote or "
                            "SPARK_REMOTE)")
        _stage_arguments(p, name)
    models = sub.add_parser("models", help="list registered models or roll one back")
    models.add_argument("action", choices=("list", "rollback"))
    models.add_argument("name", nargs="?", help="registered model (rollback)")
    models.add_argument("--to", metavar="VERSION", help="version to make champion (rollback)")
    models.add_argument("--lakehouse", required=True)
    models.add_argument("--conf")
    models.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    gen = sub.add_parser("generate", help="write synthetic invoice lines in the UCI layout")
    gen.add_argument("--customers", type=int, required=True)
    gen.add_argument("--out", required=True, help="output path (.parquet or .csv)")
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--conf")
    gen.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return parser


def _stage_arguments(p: argparse.ArgumentParser, name: str) -> None:
    """The options only some stages take."""
    if name in ("segment", "clv", "drift", "run"):
        p.add_argument("--as-of", help="segment / score as of this date (yyyy-mm-dd); "
                                       "default: the day after the last invoice")
    if name in ("audiences", "export"):
        p.add_argument("--as-of", help="a segmented date (yyyy-mm-dd); default: the "
                                       "latest segmented date")
    if name in ("segment", "clv", "run"):
        p.add_argument("--use-champion", action="store_true",
                       help="score with the registered champion models, no refit")
    if name in ("clv", "run"):
        p.add_argument("--horizon-days", type=int,
                       help="predict spend over this many days (default clv.horizon_days)")
        p.add_argument("--backtest", action="store_true",
                       help="score at --as-of and compare with the actual spend after it")
    if name in ("drift", "run"):
        p.add_argument("--fail-on-drift", action="store_true",
                       help=f"exit with code {EXIT_DRIFT} when a drift check breaches its "
                            "threshold (after every stage has run)")
    if name in ("dashboard", "run"):
        p.add_argument("--out", help="dashboard HTML file (default dashboard.out, else "
                                     "<lakehouse>/dashboard/report.html)")
    if name == "export":
        _export_arguments(p)


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="file to write (a folder of parts when the "
                                                "list is larger than export.single_file_max_rows)")
    p.add_argument("--audience", help="a configured audience (see 'audiences')")
    p.add_argument("--segment", action="append", default=[], metavar="NAME",
                   help="keep customers of this RFM segment (repeatable)")
    p.add_argument("--cluster", action="append", default=[], type=int, metavar="N",
                   help="keep customers of this cluster (repeatable)")
    p.add_argument("--tier", action="append", default=[], metavar="T",
                   help="keep customers of this value tier (repeatable)")
    p.add_argument("--min-p-alive", type=float, metavar="X",
                   help="keep customers whose P(alive) is at least X")
    p.add_argument("--format", choices=("csv", "parquet"), help="default export.format")


def export_filters(args: argparse.Namespace, cfg: Config) -> Filters:
    """The export's filters: a configured audience narrowed by the flags given."""
    from custseg.stages.audiences import Filters, check_names, configured

    base = configured(cfg, args.audience) if args.audience else Filters()
    filters = Filters(args.segment or base.segments, args.cluster or base.clusters,
                      args.tier or base.tiers,
                      args.min_p_alive if args.min_p_alive is not None else base.min_p_alive)
    check_names(filters, cfg)
    return filters


def run_stages(stages: Sequence[str], args: argparse.Namespace, cfg: Config) -> list[str]:
    """Take the lakehouse lock, build the session and run the stages in order under one run id,
    printing each summary and a table of all of them; return the drift alerts raised."""
    import custseg
    from custseg.io import lakehouse
    from custseg.runtime import context, lock, logs
    from custseg.runtime.session import build_spark, is_classic, size_partitions

    run_id = (context.validate_run_id(args.run_id) if args.run_id
              else context.new_run_id())
    command = f"custseg {args.stage}"
    summaries: list[StageSummary] = []
    with context.active(run_id), ExitStack() as held:
        remote = lakehouse.is_uri(args.lakehouse)
        notes = [] if remote else held.enter_context(
            lock.lakehouse_lock(args.lakehouse, run_id, command))
        log_file = None if args.verbose else logs.log_file(args.lakehouse, run_id)
        if log_file:
            logs.route(log_file)
        if "ingest" in stages:
            held.callback(_read_ahead(args, cfg))
        spark = build_spark(cfg, log_file, record_classes=args.stage == "run")
        if not is_classic(spark):  # a Connect client's threads would keep the process alive
            held.callback(spark.stop)
        if remote:
            notes = held.enter_context(
                lock.lakehouse_lock(args.lakehouse, run_id, command, spark))
        log(args.stage, f"run {run_id}: custseg {custseg.__version__} from {custseg.__file__}; "
            f"Spark {spark.version}, master {spark.conf.get('spark.master', '?')}")
        for note in notes:
            log(args.stage, note)
        alerts: list[str] = []
        warm_at = _before_mlflow(stages)
        for stage in stages:
            context.check_stop()
            if stage == warm_at:
                from custseg.runtime import registry

                held.callback(registry.finish_warm_up)
                registry.warm_up(args.lakehouse, cfg)
            partitions, adaptive = size_partitions(spark, _input_bytes(spark, stage, args), cfg)
            log(stage, f"start ({partitions} shuffle partitions"
                       f"{'' if adaptive else ', adaptive execution off'})")
            if is_classic(spark):  # the event logs' stage (bench/event_profile.py)
                spark.sparkContext.setLocalProperty(STAGE_PROPERTY, stage)
            else:  # the server's jobs carry the stage as an operation tag
                spark.clearTags()
                spark.addTag(f"custseg-{stage}")
            summary = _run_stage(stage, spark, args, cfg)
            if stage == "drift":
                alerts += [a for a in summary.alerts if a.startswith("DRIFT")]
            _print_summary(summary)
            summaries.append(summary)
    if len(summaries) > 1:
        log(args.stage, f"run {run_id} summary")
        for line in stage_table(summaries):
            print(line, flush=True)
    if args.stage == "run":
        _finish_class_archive(args.stage)
    return alerts


def _read_ahead(args: argparse.Namespace, cfg: Config) -> Callable[[], None]:
    """Start reading a workbook input while the session starts (``ingest.read_ahead``);
    return what forgets a read nobody took."""
    from custseg.io import sources
    from custseg.stages.ingest import read_ahead

    read_ahead(args.input, args.lakehouse, cfg)
    return sources.drop_read_ahead


def _finish_class_archive(stage: str) -> None:
    """After the first successful run on a machine: the JVM's classes for the next ones."""
    from custseg.runtime import class_archive

    started = time.time()
    if path := class_archive.finish_recording():
        log(stage, f"recorded the driver JVM's classes for later runs in "
                   f"{time.time() - started:.1f} s: {path}")


def _before_mlflow(stages: Sequence[str]) -> str | None:
    """The stage during which MLflow is made ready for the first stage that logs to it (see
    ``registry.warm_up``): the one right before it, which runs in Spark while the driver's
    Python waits (ingest, which reads workbooks in Python, never is)."""
    for before, stage in pairwise(stages):
        if stage in MLFLOW_STAGES:
            return None if before in ("ingest", *MLFLOW_STAGES) else before
    return None


def _input_bytes(spark: SparkSession, stage: str, args: argparse.Namespace) -> int | None:
    """The size of the table (or file) a stage reads most, for its shuffle partitions."""
    from custseg.io import lakehouse

    if stage == "ingest":
        path = args.input
        if lakehouse.is_uri(path) or not os.path.exists(path):
            return None
        if os.path.isfile(path):
            return os.path.getsize(path)
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
                   for f in files)
    table = BRONZE if stage == "refine" else ("silver", FACT)
    return lakehouse.size_bytes(spark, lakehouse.table_path(args.lakehouse, *table))


def _run_stage(
    stage: str, spark: SparkSession, args: argparse.Namespace, cfg: Config
) -> StageSummary:
    if stage == "ingest":
        from custseg.stages.ingest import ingest

        return ingest(spark, args.input, args.lakehouse, cfg)
    if stage == "refine":
        from custseg.stages.refine import refine

        return refine(spark, args.lakehouse, cfg)
    if stage == "report":
        from custseg.stages.report import report

        return report(spark, args.lakehouse, cfg)
    if stage == "segment":
        from custseg.stages.segment import segment

        return segment(spark, args.lakehouse, cfg, args.as_of, args.use_champion)
    if stage == "clv":
        from custseg.stages.clv import clv

        return clv(spark, args.lakehouse, cfg, args.as_of, args.horizon_days,
                   args.backtest, args.use_champion)
    if stage == "drift":
        from custseg.stages.drift import drift

        return drift(spark, args.lakehouse, cfg, args.as_of)
    if stage == "audiences":
        from custseg.stages.audiences import audiences

        return audiences(spark, args.lakehouse, cfg, args.as_of)
    if stage == "export":
        from custseg.stages.audiences import export

        return export(spark, args.lakehouse, cfg, args.out, args.as_of,
                      export_filters(args, cfg), args.format or cfg["export"]["format"])
    from custseg.stages.dashboard import dashboard

    return dashboard(spark, args.lakehouse, cfg, args.out)


def stage_table(summaries: Sequence[StageSummary]) -> list[str]:
    """One line per stage: rows in, rows written, alerts and seconds, then the total."""
    out = [f"  {'stage':<10} {'rows in':>12} {'rows written':>13} {'alerts':>6} {'seconds':>8}"]
    for s in summaries:
        out.append(f"  {s.stage:<10} {s.rows_in:>12,} {sum(s.rows_out.values()):>13,} "
                   f"{len(s.alerts):>6} {s.seconds:>8.1f}")
    out.append(f"  {'total':<10} {'':>12} {'':>13} {sum(len(s.alerts) for s in summaries):>6} "
               f"{sum(s.seconds for s in summaries):>8.1f}")
    return out


_SIGTERM = "stopped by SIGTERM: every table is as of its last commit; run the same command " \
           "again to finish"


def _on_sigterm(signum: int, frame: object) -> None:
    from custseg.runtime import context

    context.request_stop(_SIGTERM)
    raise Terminated(_SIGTERM)


_STORAGE_REASONS = ("No space left on device", "Permission denied", "Operation not permitted",
                    "Read-only file system", "Disk quota exceeded")
_PATH_AND_REASON = re.compile(r"(/\S+) \((" + "|".join(_STORAGE_REASONS) + r")\)")


def storage_failure(exc: BaseException, lakehouse: str) -> str | None:
    """One line for a write the storage refused (full, read-only, no permission), naming the
    folder; None for any other failure. Delta commits are atomic, so every table is still at
    its last commit."""
    after = "; every table is at its last commit"
    if isinstance(exc, OSError) and exc.strerror in _STORAGE_REASONS:
        where = os.path.dirname(exc.filename) if exc.filename else lakehouse
        return f"cannot write {where} ({exc.strerror}){after}"
    text = str(exc)
    found = _PATH_AND_REASON.search(text)
    if found:
        return f"cannot write {os.path.dirname(found.group(1))} ({found.group(2)}){after}"
    reason = next((r for r in _STORAGE_REASONS if r in text), None)
    return f"cannot write the lakehouse {lakehouse} ({reason}){after}" if reason else None


def _generate(args: argparse.Namespace, cfg: Config, started: float) -> int:
    """``custseg generate``: synthetic invoice lines in the UCI layout."""
    from custseg.io.generate import generate_to
    from custseg.runtime.session import build_spark

    if args.customers < 1:
        raise CustsegError("--customers must be at least 1")
    spark = build_spark(cfg)
    log("generate", f"{args.customers:,} customers, seed {args.seed} -> {args.out}")
    rows = generate_to(spark, args.customers, args.out, args.seed)
    log("generate", f"wrote {rows:,} invoice lines in {time.time() - started:.1f} s")
    return EXIT_OK


def _models(args: argparse.Namespace, cfg: Config) -> int:
    """``custseg models list`` and ``custseg models rollback NAME --to VERSION``."""
    from custseg.runtime import registry

    if args.action == "rollback" and not (args.name and args.to):
        raise CustsegError("models rollback needs NAME and --to VERSION")
    registry.configure(args.lakehouse, cfg)
    if args.action == "rollback":
        before = registry.rollback(args.name, args.to)
        log("models", f"{args.name}: '{registry.CHAMPION}' now version {args.to} "
                      f"(was {before or 'unset'})")
        return EXIT_OK
    rows = registry.list_models()
    if not rows:
        log("models", "no registered models")
    for r in rows:
        when = dt.datetime.fromtimestamp(r["created"] / 1000).isoformat(sep=" ",
                                                                         timespec="seconds")
        extra = ", ".join(f"{k}={v}" for k, v in sorted(r["tags"].items())
                          if k != "training_fingerprint")
        print(f"{r['name']:<24} v{r['version']:<4} {'champion' if r['champion'] else '':<9}"
              f"{when}  run {r['run_id']}  {extra}", flush=True)
    return EXIT_OK


def _absolute_paths(args: argparse.Namespace) -> None:
    """Local paths made absolute here, where the user's working directory is known: a Spark
    Connect server or a cluster resolves a relative path against its own."""
    from custseg.io.paths import normalise_root

    for name in ("input", "out", "lakehouse"):
        if getattr(args, name, None):
            setattr(args, name, normalise_root(getattr(args, name)))


def _remote(args: argparse.Namespace) -> list[str]:
    """``--remote`` as the ``spark.remote`` override it stands for."""
    remote = getattr(args, "remote", None)
    return [f"spark.remote={remote}"] if remote else []


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0 on success, 2 on bad input or configuration, 1 on a failed stage,
    3 when --fail-on-drift was given and a drift check breached its threshold, 4 when another
    run holds the lakehouse, 143 when stopped by SIGTERM."""
    args = _parser().parse_args(argv)
    _absolute_paths(args)
    started = time.time()
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (a notebook, a test harness): keep the default
        pass
    try:
        cfg = load_config(args.conf, [*args.set, *_remote(args)])
        if args.stage == "generate":
            return _generate(args, cfg, started)
        if args.stage == "models":
            return _models(args, cfg)
        if args.stage == "ingest" and not args.input:
            raise CustsegError("ingest needs --input PATH")
        if args.stage == "run":
            stages = PIPELINE if args.input else PIPELINE[1:]
        else:
            stages = (args.stage,)
        from custseg.io import preflight

        if args.stage == "export":
            export_filters(args, cfg)
        preflight.check(stages, args.lakehouse, args.input, getattr(args, "as_of", None), cfg)
        alerts = run_stages(stages, args, cfg)
        if alerts and getattr(args, "fail_on_drift", False):
            checks = "; ".join(a.removeprefix("DRIFT ") for a in alerts)
            print(f"custseg {args.stage}: drift beyond thresholds: {checks}", file=sys.stderr,
                  flush=True)
            log(args.stage, f"finished in {time.time() - started:.1f} s with drift "
                            f"(exit {EXIT_DRIFT})")
            return EXIT_DRIFT
    except CustsegError as exc:
        stage = args.stage
        print(f"custseg {stage}: error: {exc}", file=sys.stderr, flush=True)
        code = exc.exit_code if type(exc) is not CustsegError else EXIT_BAD_INPUT
        return code
    except Exception as exc:  # a failed stage: one line for the scheduler, the trace for people
        from custseg.runtime import context

        if context.stop_requested():  # Py4J wraps the signal's exception in a JVM call
            print(f"custseg {args.stage}: error: {_SIGTERM}", file=sys.stderr, flush=True)
            return EXIT_TERMINATED
        storage = storage_failure(exc, args.lakehouse)
        if storage:
            print(f"custseg {args.stage}: error: {storage}", file=sys.stderr, flush=True)
            return EXIT_STAGE_FAILED
        import traceback

        traceback.print_exc()
        print(f"custseg {args.stage}: failed: {type(exc).__name__}: {str(exc).splitlines()[0]}",
              file=sys.stderr, flush=True)
        return EXIT_STAGE_FAILED
    log(args.stage, f"finished in {time.time() - started:.1f} s")
    return EXIT_OK


def console() -> None:
    """Console-script wrapper that exits with main's code."""
    sys.exit(main())


if __name__ == "__main__":
    console()
