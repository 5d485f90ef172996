"""Shared fixtures: one local Spark session with Delta for the whole test run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from custseg.config import load_config

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("CUSTSEG_DATA_DIR", REPO.parent / "shared" / "data"))

TEST_SETTINGS = [
    "spark.master=local[2]",
    "spark.shuffle_partitions=2",
    "spark.ui_enabled=false",
    "spark.driver_memory=3g",
]


@pytest.fixture(scope="session", autouse=True)
def class_archive_dir(tmp_path_factory):
    """The session's own folder of driver class archives (never the user's): the first
    ``custseg run`` the tests start records one and the later custseg JVMs map it."""
    folder = tmp_path_factory.mktemp("cds")
    mp = pytest.MonkeyPatch()
    mp.setenv("CUSTSEG_CDS_DIR", str(folder))
    yield folder
    mp.undo()
    for archive in folder.iterdir():  # some 200 MB each: not kept with pytest's old folders
        archive.unlink()


@pytest.fixture(scope="session")
def cfg() -> dict:
    return load_config(overrides=TEST_SETTINGS)


@pytest.fixture(scope="session")
def spark(cfg):
    from custseg.runtime.session import build_spark

    session = build_spark(cfg)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.exists():
        message = f"data sets not found at {DATA_DIR} (set CUSTSEG_DATA_DIR)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI always has ../shared/data: a missing set is an error
        pytest.skip(message)
    return DATA_DIR


UCI_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"


def write_csv(path: Path, rows: list[str], header: str = UCI_HEADER,
              encoding: str = "utf-8") -> str:
    """Write a small CSV with the UCI header and return its path as text."""
    path.write_bytes(("\n".join([header, *rows]) + "\n").encode(encoding))
    return str(path)


def generated_lakehouse(spark, base: Path, customers: int, seed: int, cfg: dict) -> str:
    """Generate a sample, ingest and refine it into ``base/lakehouse``; return the root."""
    from custseg.io.generate import generate_to
    from custseg.stages.ingest import ingest
    from custseg.stages.refine import refine

    src = str(base / "sample.parquet")
    generate_to(spark, customers, src, seed=seed)
    root = str(base / "lakehouse")
    ingest(spark, src, root, cfg)
    refine(spark, root, cfg)
    return root


@pytest.fixture(scope="session")
def refined_sample(spark, tmp_path_factory) -> str:
    """1,200 generated customers (seed 5) ingested and refined: the silver tables the stage
    tests start from. Read-only: a module that runs stages on it works on ``copy_lakehouse``."""
    cfg = load_config(overrides=["spark.shuffle_partitions=2"])
    return generated_lakehouse(spark, tmp_path_factory.mktemp("refined"), 1200, 5, cfg)


def copy_lakehouse(root: str, base: Path) -> str:
    """A copy of the lakehouse at ``root`` in ``base/lakehouse`` (Delta tables keep their
    files' paths relative, so a copied folder is the same table); return the copy's root."""
    import shutil

    copy = str(base / "lakehouse")
    shutil.copytree(root, copy)
    return copy


def wait_for_file(folder: Path, pattern: str, proc: subprocess.Popen,
                  timeout: float = 120) -> None:
    """Until a file matching ``pattern`` exists under ``folder`` (something the process has
    written), while the process is still going."""
    import time

    deadline = time.monotonic() + timeout
    while not any(folder.glob(pattern)):
        assert proc.poll() is None, f"the process ended before {folder}/{pattern} appeared"
        assert time.monotonic() < deadline, f"no {folder}/{pattern} after {timeout} s"
        time.sleep(0.02)  # polls the folder


def delta_file_stats(path: str) -> list[dict]:
    """The per-file statistics (row counts, min/max) in a Delta table's log, read as JSON."""
    import json

    stats = []
    for log in sorted(Path(path, "_delta_log").glob("*.json")):
        for line in log.read_text().splitlines():
            add = json.loads(line).get("add")
            if add and add.get("stats"):
                stats.append(json.loads(add["stats"]))
    return stats


def assert_same_rows(got, want, ignore=(), digits: int = 9) -> None:
    """The same rows in any order, as often each, leaving out the columns ``ignore`` and
    comparing floating-point columns to ``digits`` significant digits, so that a sum added up
    in another order still counts as equal. A difference is described by chispa."""
    from chispa import assert_df_equality
    from pyspark.sql import functions as F

    def rounded(df):
        floats = {f.name for f in df.schema.fields
                  if f.dataType.typeName() in ("double", "float")}
        return df.select(*[
            F.when(F.col(c).isNull() | F.isnan(c) | (F.col(c) == 0), F.col(c)).otherwise(
                F.round(F.col(c) * scale(c)) / scale(c)).alias(c)
            if c in floats else F.col(c) for c in df.columns])

    def scale(c):
        return F.pow(F.lit(10.0), F.lit(digits - 1) - F.floor(F.log10(F.abs(c))))

    keep = [c for c in want.columns if c not in ignore]
    got, want = rounded(got.select(*keep)), rounded(want.select(*keep))

    def chispa() -> None:
        assert_df_equality(got, want, ignore_row_order=True, ignore_nullable=True,
                           ignore_metadata=True, allow_nan_equality=True)

    types = [[(f.name, f.dataType.simpleString()) for f in df.schema.fields]
             for df in (got, want)]
    if types[0] != types[1] or any(t.startswith("map<") for _, t in types[0]):
        chispa()  # maps cannot be grouped by
        return
    # One query: how often each distinct row occurs in each table (grouping takes NaN as NaN,
    # null as null and -0.0 as 0.0, as chispa's comparison does). chispa sorts and collects
    # both tables; it runs only to describe a difference.
    sides = got.withColumn("_side", F.lit(1)).unionByName(want.withColumn("_side", F.lit(-1)))
    counts = sides.groupBy(*keep).agg(F.sum("_side").alias("_diff"))
    if counts.where(F.col("_diff") != 0).isEmpty():
        return
    chispa()
    raise AssertionError(f"rows differ in how often they occur: {got.exceptAll(want).take(5)} "
                         f"against {want.exceptAll(got).take(5)}")


# The clv stage at its lightest: one origin, two cutoffs, few trees and draws.
CLV_FAST = ["clv.gbt.max_iter=3", "clv.origins=1", "clv.max_snapshots=2",
            "clv.bootstrap.draws=20"]
NOTEBOOK_SETTINGS = ";".join(["spark.shuffle_partitions=2", "cluster.k_max=4",
                              "cluster.resamples=2", *CLV_FAST])


CUSTSEG = str(Path(sys.executable).parent / "custseg")
# a whole `custseg run` at its lightest, as the end-to-end tests start it
RUN_FAST = ["--set", "spark.master=local[2]", "--set", "spark.shuffle_partitions=2",
            "--set", "spark.driver_memory=2g", "--set", "cluster.k_max=3",
            "--set", "cluster.resamples=2", *[a for s in CLV_FAST for a in ("--set", s)]]


def start_run(sample: str, root: str, run_id: str, *extra: str) -> subprocess.Popen:
    """``custseg run`` of ``sample`` into ``root`` as a process of its own (its own group, so
    that a test can kill it whole), stdout and stderr together."""
    return subprocess.Popen(
        [CUSTSEG, "run", "--input", sample, "--lakehouse", root, "--run-id", run_id, *RUN_FAST,
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.fixture(scope="session")
def run_sample(tmp_path_factory) -> str:
    """800 generated customers, the input of the end-to-end runs."""
    out = str(tmp_path_factory.mktemp("runs") / "sample.parquet")
    subprocess.run([CUSTSEG, "generate", "--customers", "800", "--out", out, "--seed", "23",
                    *RUN_FAST], check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def clean_run(run_sample, tmp_path_factory) -> dict:
    """Two runs started at once on one lakehouse: the one that gets the lock is the clean run.
    It is the session's first ``custseg run``, so it records the driver class archive that the
    JVMs started after it map (spark-submit.sh's among them)."""
    base = tmp_path_factory.mktemp("clean")
    root = str(base / "lh")
    events = {rid: base / f"events-{rid}" for rid in ("both-a", "both-b")}
    procs = {}
    for rid, folder in events.items():
        folder.mkdir()
        procs[rid] = start_run(run_sample, root, rid, "--set", "spark.conf={spark.eventLog."
                               f"enabled: true, spark.eventLog.compress: false, "
                               f"spark.eventLog.dir: 'file://{folder}'}}")
    out = {rid: p.communicate()[0] for rid, p in procs.items()}
    codes = {rid: p.returncode for rid, p in procs.items()}
    return dict(root=root, out=out, codes=codes, events=events)


@pytest.fixture(scope="session")
def notebook_run(spark, tmp_path_factory):
    """The four notebooks run in order as plain Python on a generated 300-customer sample,
    parameters from the environment; the lakehouse they build serves the dashboard tests too."""
    import runpy

    root = tmp_path_factory.mktemp("notebooks") / "lakehouse"
    out = root.parent / "dashboard.html"
    env = {"LAKEHOUSE": str(root), "SAMPLE_CUSTOMERS": "300", "SETTINGS": NOTEBOOK_SETTINGS,
           "OUT": str(out), "TOP": "5"}
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(f"CUSTSEG_NB_{key}", value)
    namespaces = {}
    try:
        for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py")):
            namespaces[path.name[:2]] = runpy.run_path(str(path), run_name="__main__")
    finally:
        mp.undo()
    return {"root": str(root), "out": out, "ns": namespaces}


# two threads, one task failure allowed: a master no classic test session uses, so a run that
# reports it read its master from the server
CONNECT_MASTER = "local[2,1]"


@pytest.fixture(scope="session")
def connect_server(tmp_path_factory):
    """A local Spark Connect server (loopback, the cached Delta jars, executors on this venv's
    Python) for the session; stopped by its own process id. Yields its ``sc://`` URL."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    from custseg.runtime.jars import ensure_delta_jars
    from custseg.runtime.spark_conf import CODEGEN_CACHE, DELTA_CONF

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("connect") / "server.log"
    conf = {**DELTA_CONF, **CODEGEN_CACHE, "spark.connect.grpc.binding.address": "127.0.0.1",
            "spark.connect.grpc.binding.port": str(port), "spark.sql.shuffle.partitions": "2",
            "spark.ui.enabled": "false", "spark.driver.memory": "2g"}
    cmd = [str(Path(sys.executable).parent / "spark-submit"), "--class",
           "org.apache.spark.sql.connect.service.SparkConnectServer", "--master", CONNECT_MASTER,
           "--jars", ",".join(ensure_delta_jars()),
           *[a for k, v in conf.items() for a in ("--conf", f"{k}={v}")]]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    with open(log, "w") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "Spark Connect server started" not in log.read_text():
            assert server.poll() is None, f"the Connect server ended:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no Connect server:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)  # polls the server's log for its start line
        yield f"sc://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
