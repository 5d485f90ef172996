"""``custseg run`` as a scheduler sees it: one run id everywhere, the lakehouse lock, runs killed
with a signal and started again, and the same input run twice."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from custseg.cli import PIPELINE
from custseg.errors import ConfigError, LakehouseBusy
from custseg.io import lakehouse
from custseg.runtime import context, lock
from tests.conftest import (
    CONNECT_MASTER,
    CUSTSEG,
    RUN_FAST,
    assert_same_rows,
    start_run,
    wait_for_file,
)

REPO = Path(__file__).resolve().parents[2]
# lineage that differs between any two runs by design; everything else must be equal
VOLATILE = {"pipeline_run_id", "run_id", "ingested_at", "refined_at"}


# ---- the lock and the id, in-process -----------------------------------------------------

def test_run_ids_are_checked():
    assert context.validate_run_id("scheduled__2026-11-23T02:00:00+00:00")
    for bad in ("", "-x", "a b", "a/b", "x" * 129):
        with pytest.raises(ConfigError, match="--run-id"):
            context.validate_run_id(bad)
    a, b = context.new_run_id(), context.new_run_id()
    assert a != b and a[:8] == time.strftime("%Y%m%d", time.gmtime())


def _write_lock(root: Path, **holder) -> Path:
    path = Path(lock.lock_path(str(root)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(holder))
    return path


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "uri"])
def test_a_live_holder_keeps_the_lakehouse(tmp_path, as_uri):
    """On a local path and at a URI (there through pyarrow.fs, as on an object store)."""
    root = f"file://{tmp_path}" if as_uri else str(tmp_path)
    held = tmp_path / "_custseg" / "run.lock"
    with lock.lakehouse_lock(root, "first", "custseg run") as notes:
        assert notes == []
        with pytest.raises(LakehouseBusy) as err:
            with lock.lakehouse_lock(root, "second", "custseg run"):
                pass
        message = str(err.value)
        assert "is in use by run first (custseg run, pid" in message
        assert lock.lock_path(root) in message
        assert held.exists()
    assert not held.exists()


def test_a_dead_holder_on_this_host_is_taken_over(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    _write_lock(tmp_path, run_id="killed", pid=gone.pid, host=socket.gethostname())
    with lock.lakehouse_lock(str(tmp_path), "next", "custseg run") as notes:
        assert notes == [f"took over the lock of run killed (pid {gone.pid} is gone)"]
        held = json.loads(Path(lock.lock_path(str(tmp_path))).read_text())
        assert held["run_id"] == "next" and held["pid"] == os.getpid()


def test_the_lock_is_linked_in_whole_and_leaves_nothing_aside(tmp_path):
    with lock.lakehouse_lock(str(tmp_path), "first", "custseg run"):
        folder = Path(lock.lock_path(str(tmp_path))).parent
        assert [p.name for p in folder.iterdir()] == ["run.lock"]
        assert json.loads((folder / "run.lock").read_text())["run_id"] == "first"


def test_a_mount_without_hard_links_still_locks(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    with lock.lakehouse_lock(str(tmp_path), "first", "custseg run"):
        with pytest.raises(LakehouseBusy, match="in use by run first"):
            with lock.lakehouse_lock(str(tmp_path), "second", "custseg run"):
                pass
        folder = Path(lock.lock_path(str(tmp_path))).parent
        assert [p.name for p in folder.iterdir()] == ["run.lock"]
    assert not Path(lock.lock_path(str(tmp_path))).exists()


def test_a_lock_still_being_written_is_read_once_whole(tmp_path):
    """A store without atomic create shows the file before its text: wait for the text."""
    path = _write_lock(tmp_path)
    path.write_text("")
    holder = {"run_id": "slow-writer", "pid": 1, "host": "another-host", "command": "custseg run"}
    later = threading.Timer(0.5, lambda: path.write_text(json.dumps(holder)))
    later.start()
    with pytest.raises(LakehouseBusy, match="in use by run slow-writer .custseg run, pid 1 on"):
        with lock.lakehouse_lock(str(tmp_path), "mine", "custseg run"):
            pass
    later.join()


def test_a_holder_on_another_host_is_never_taken(tmp_path):
    path = _write_lock(tmp_path, run_id="elsewhere", pid=1, host="another-host")
    with pytest.raises(LakehouseBusy, match="pid 1 on another-host"):
        with lock.lakehouse_lock(str(tmp_path), "mine", "custseg run"):
            pass
    assert json.loads(path.read_text())["run_id"] == "elsewhere"


# ---- whole runs, as processes -------------------------------------------------------------

def _read_until(proc: subprocess.Popen, marker: str) -> str:
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"no {marker!r} before the run ended:\n{''.join(seen)[-3000:]}")


def _tables(root: str) -> list[str]:
    return sorted(os.path.relpath(d, root) for d, dirs, _ in os.walk(root)
                  if "_delta_log" in dirs)


def test_a_stop_request_stops_the_next_commit_even_if_its_signal_was_swallowed(spark, tmp_path):
    """SIGTERM's exception can be lost inside Py4J (it resends the command it interrupted), so
    the handler also leaves a request that every Delta write checks before it commits."""
    from custseg.errors import Terminated

    path = str(tmp_path / "t")
    df = spark.range(3)
    context.request_stop("stopped by SIGTERM")
    try:
        with pytest.raises(Terminated, match="SIGTERM"):
            lakehouse.overwrite(df, path)
        assert not lakehouse.exists(spark, path)
    finally:
        context._stop.clear()
    lakehouse.overwrite(df, path)
    assert lakehouse.read(spark, path).count() == 3


def test_same_rows_allows_order_and_rounding_and_nothing_else(spark):
    from chispa import DataFramesNotEqualError

    want = spark.createDataFrame([(1, 0.1 + 0.2, "a", "r1"), (2, 1e6 / 3, None, "r1")],
                                 "k int, x double, s string, run_id string")
    same = spark.createDataFrame([(2, 333333.3333334, None, "r2"), (1, 0.3, "a", "r2")],
                                 want.schema)
    assert_same_rows(same, want, ignore={"run_id"})
    nan = spark.createDataFrame([(3, float("nan"), "c", "r3")], want.schema)
    assert_same_rows(same.unionByName(nan), want.unionByName(nan), ignore={"run_id"})
    for got in ([(1, 0.3, "a", "r"), (2, 333333.34, None, "r")],  # the 8th digit
                [(1, 0.3, "a", "r"), (2, 1e6 / 3, "b", "r")],
                [(1, 0.3, "a", "r")],
                [(1, 0.3, "a", "r"), (1, 0.3, "a", "r"), (2, 1e6 / 3, None, "r")]):
        with pytest.raises(DataFramesNotEqualError):
            assert_same_rows(spark.createDataFrame(got, want.schema), want, ignore={"run_id"})


def _same_business_tables(spark, root: str, other: str) -> None:
    """The same business tables (all but ``ops/``) in both lakehouses, with the same rows.

    Four tables are compared at a time: each comparison is one small query whose time is
    mostly planning and compiling on the driver, which one thread leaves a core idle for.
    """
    from concurrent.futures import ThreadPoolExecutor

    business = [t for t in _tables(other) if not t.startswith("ops/")]
    assert [t for t in _tables(root) if not t.startswith("ops/")] == business

    def same(table: str) -> None:
        assert_same_rows(lakehouse.read(spark, f"{root}/{table}"),
                         lakehouse.read(spark, f"{other}/{table}"), ignore=VOLATILE)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(same, business))  # raises the first table's error


def test_two_runs_at_once_one_proceeds_the_other_stops_clearly(clean_run):
    assert sorted(clean_run["codes"].values()) == [0, 4], clean_run["out"]
    winner = next(r for r, c in clean_run["codes"].items() if c == 0)
    loser = next(r for r, c in clean_run["codes"].items() if c == 4)
    said = clean_run["out"][loser]
    assert f"custseg run: error: lakehouse {clean_run['root']} is in use by run {winner}" in said
    assert "[ingest] start" not in said
    assert not os.path.exists(lock.lock_path(clean_run["root"]))


# the JVM itself prints this at start-up, before any logging is configured
JVM_NOTICE = "WARNING: Using incubator modules: jdk.incubator.vector"
STAGE_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[[a-z]+\] |^  \S")


def test_the_console_holds_the_stage_lines_and_the_log_file_the_rest(clean_run):
    winner = next(r for r, c in clean_run["codes"].items() if c == 0)
    other = [line for line in clean_run["out"][winner].splitlines()
             if line and line != JVM_NOTICE and not STAGE_LINE.match(line)]
    assert other == []
    log = Path(clean_run["root"], "_custseg", "logs", f"{winner}.log").read_text()
    assert "Creating initial MLflow database tables" in log  # MLflow's INFO, on a new store
    assert "NativeCodeLoader" in log  # a Spark WARN from the JVM


def test_event_logs_tell_stages_and_writes_apart(clean_run):
    """Every Spark job carries its custseg stage, every Delta write names its table, and
    bench/event_profile.py reads both back from the winner's event log."""
    winner = next(r for r, c in clean_run["codes"].items() if c == 0)
    loser = next(r for r, c in clean_run["codes"].items() if c == 4)
    assert not any(clean_run["events"][loser].iterdir())  # the loser never started Spark
    got = subprocess.run([sys.executable, str(REPO / "bench/event_profile.py"),
                          str(clean_run["events"][winner]), "--top", "100000"],
                         capture_output=True, text=True, check=True).stdout
    by_stage = got.splitlines()[0]
    assert by_stage.startswith("Spark wall seconds by custseg stage")
    for stage in PIPELINE:
        if stage != "drift":  # one as-of date: nothing to compare, no Spark job
            assert f" {stage} " in by_stage + " ", by_stage
    lines = got.splitlines()
    rows = [line.split() for line in lines[lines.index(next(x for x in lines
                                                              if x.startswith("kind"))) + 1:]]
    writes = {(r[1], r[r.index("write") + 1]) for r in rows if "write" in r}
    assert {("ingest", "bronze/raw_invoices"), ("refine", "silver/fct_invoices"),
            ("segment", "gold/rfm_segments"), ("clv", "gold/clv_predictions")} <= writes
    # built once, by segment with its RFM segments, not first by report and then again
    assert {s for s, t in writes if t == "gold/report_customers"} == {"segment"}
    assert ("report", "gold/report_sales") in writes


def _commit_infos(table: Path) -> list[dict]:
    """The ``commitInfo`` of every commit in a Delta table's log, read as JSON."""
    actions = [json.loads(line) for log in sorted(table.glob("_delta_log/*.json"))
               for line in log.read_text().splitlines()]
    return [a["commitInfo"] for a in actions if "commitInfo" in a]


def test_every_table_and_mlflow_run_records_the_run_id(spark, clean_run):
    from mlflow import MlflowClient

    from custseg.config import load_config
    from custseg.runtime import registry

    winner = next(r for r, c in clean_run["codes"].items() if c == 0)
    tables = _tables(clean_run["root"])
    assert {"bronze/raw_invoices", "silver/fct_invoices", "silver/quarantine",
            "gold/rfm_segments", "gold/clv_predictions", "ops/stage_runs"} <= set(tables)
    # every table's run ids in one query, not one a table; collected: a row a table
    ids = functools.reduce(DataFrame.unionByName, [
        lakehouse.read(spark, f"{clean_run['root']}/{t}").select(
            F.lit(t).alias("table"), context.COLUMN) for t in tables])
    found = {r["table"]: set(r["ids"]) for r in ids.groupBy("table").agg(
        F.collect_set(context.COLUMN).alias("ids")).collect()}
    assert found == {t: {winner} for t in tables}
    for table in tables:  # each commit's metadata, as written in the table's log
        metadata = [json.loads(info["userMetadata"]) for info in _commit_infos(
            Path(clean_run["root"], table)) if info.get("userMetadata")]
        assert metadata and all(m[context.COLUMN] == winner for m in metadata), table
    registry.configure(clean_run["root"], load_config())
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("custseg").experiment_id])
    assert {r.data.tags["custseg.stage"] for r in runs} == {"segment", "clv"}
    assert {r.data.tags[f"custseg.{context.COLUMN}"] for r in runs} == {winner}
    said = clean_run["out"][winner]
    assert f"[run] run {winner}: custseg" in said
    # every stage's input is under 64 MB: two shuffle partitions, no adaptive execution
    assert said.count("start (2 shuffle partitions, adaptive execution off)") == 8
    summary = said[said.index(f"run {winner} summary"):].splitlines()[1:11]
    assert [line.split()[0] for line in summary] == [
        "stage", "ingest", "refine", "segment", "report", "clv", "audiences", "drift", "dashboard",
        "total"]


def test_killed_runs_started_again_end_with_the_clean_tables(spark, run_sample, clean_run,
                                                             tmp_path, class_archive_dir):
    root = str(tmp_path / "killed")
    lock_file = lock.lock_path(root)
    # a scheduler's timeout: SIGTERM to the run, mid-refine
    first = start_run(run_sample, root, "killed-1")
    _read_until(first, "[refine] start")
    wait_for_file(Path(root, "silver", "fct_invoices", "_delta_log"), f"{1:020d}.json", first)
    assert first.poll() is None, "refine ended before it could be stopped"
    first.send_signal(signal.SIGTERM)
    rest = first.communicate()[0]
    assert first.returncode == 143, rest[-2000:]
    assert "custseg run: error: stopped by SIGTERM" in rest
    assert not os.path.exists(lock_file)
    # a hard kill of the whole process group (Python and the JVM), mid-clv
    second = start_run(run_sample, root, "killed-2")
    _read_until(second, "fitting on")  # a clv origin's models are being fitted
    assert second.poll() is None, "clv ended before it could be killed"
    os.killpg(second.pid, signal.SIGKILL)
    second.wait()
    assert json.loads(Path(lock_file).read_text())["run_id"] == "killed-2"
    third = start_run(run_sample, root, "killed-3")
    said = third.communicate()[0]
    assert third.returncode == 0, said[-3000:]
    assert "took over the lock of run killed-2" in said
    assert not os.path.exists(lock_file)

    _same_business_tables(spark, root, clean_run["root"])

    # the same input again changes nothing: no table gets a new version
    before = {t: lakehouse.version(spark, f"{root}/{t}") for t in _tables(root)}
    loads = tmp_path / "class-load.log"
    again = start_run(run_sample, root, "again", "--set", "spark.conf={spark.driver."
                      f"extraJavaOptions: '-Xlog:class+load=info:file={loads}'}}")
    said = again.communicate()[0]
    assert again.returncode == 0, said[-3000:]
    assert "already ingested" in said and said.count("nothing written") == 4
    assert {t: lakehouse.version(spark, f"{root}/{t}") for t in _tables(root)} == before

    # the clean run recorded the driver's classes; this JVM mapped them (the JVM's own log)
    winner = next(r for r, c in clean_run["codes"].items() if c == 0)
    assert "recorded the driver JVM's classes" in clean_run["out"][winner]
    assert "recorded the driver JVM's classes" not in said
    archives = list(class_archive_dir.iterdir())
    assert len(archives) == 1 and archives[0].suffix == ".jsa", archives
    loaded = loads.read_text()
    assert re.search(r" org\.apache\.spark\.SparkContext source: shared objects file \(top\)",
                     loaded), loaded[-2000:]


def test_a_run_over_spark_connect_writes_the_classic_tables(spark, run_sample, clean_run,
                                                           connect_server, tmp_path):
    """The same run through a Spark Connect server: the same tables as the classic run, its
    models registered as MLflow Spark models that a classic session loads, and the dashboard."""
    from pyspark.ml import PipelineModel

    from custseg.config import load_config
    from custseg.io.catalog import SEGMENT_MODEL, SPEND_MODEL, TIER_MODEL
    from custseg.runtime import registry

    root = str(tmp_path / "connect")
    done = subprocess.run([CUSTSEG, "run", "--input", run_sample, "--lakehouse", root,
                           "--run-id", "over-connect", "--remote", connect_server, *RUN_FAST],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"master {CONNECT_MASTER}" in done.stdout  # the server's, not the --set local[2]

    _same_business_tables(spark, root, clean_run["root"])

    registry.configure(root, load_config())
    for name in (SEGMENT_MODEL, SPEND_MODEL, TIER_MODEL):
        assert registry.champion_version(name) is not None, name
    model = registry.load_spark_model(f"models:/{SPEND_MODEL}@champion")
    assert isinstance(model, PipelineModel) and model.stages
    assert Path(root, "dashboard", "report.html").read_text().count('class="chart"') >= 10
