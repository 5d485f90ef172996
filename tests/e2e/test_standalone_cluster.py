"""A real Spark standalone cluster from the pip pyspark package: a master and two workers on
loopback, the whole pipeline submitted through spark-submit.sh, custseg absent from the workers'
Python (the system Python 3.11, which has no custseg), the tables checked, the cluster stopped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from custseg.io import lakehouse
from custseg.io.generate import generate_to
from tests.conftest import CLV_FAST, REPO, assert_same_rows

WORKER_PYTHON = shutil.which("python3.11", path="/usr/bin") or "/usr/bin/python3"
SPARK_HOME = str(Path(__import__("pyspark").__file__).parent)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _state(ui: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("cluster")
    port, ui = _port(), _port()
    env = {**os.environ, "SPARK_HOME": SPARK_HOME, "SPARK_DAEMON_MEMORY": "512m",
           "SPARK_LOG_DIR": str(base), "PYSPARK_PYTHON": WORKER_PYTHON}
    env.pop("PYTHONPATH", None)
    spark_class = f"{SPARK_HOME}/bin/spark-class"
    procs = [subprocess.Popen(
        [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
         "--port", str(port), "--webui-port", str(ui)],
        stdout=open(base / "master.log", "w"), stderr=subprocess.STDOUT, env=env)]
    url = f"spark://127.0.0.1:{port}"
    for i in (1, 2):
        procs.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
             "--cores", "1", "--memory", "2g", "--webui-port", str(_port()),
             "--work-dir", str(base / f"worker{i}"), url],
            stdout=open(base / f"worker{i}.log", "w"), stderr=subprocess.STDOUT, env=env))
    try:
        deadline = time.time() + 120
        while True:
            try:
                alive = [w for w in _state(ui)["workers"] if w["state"] == "ALIVE"]
                if len(alive) == 2:
                    break
            except OSError:
                pass
            assert time.time() < deadline, (base / "master.log").read_text()[-3000:]
            time.sleep(1)
        yield dict(url=url, ui=ui, base=base, workers=procs[1:])
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def _submit(cluster, *args: str, cwd: Path, wait: bool = True
            ) -> subprocess.CompletedProcess | subprocess.Popen:
    env = {**os.environ, "PYSPARK_PYTHON": WORKER_PYTHON,
           "PYSPARK_DRIVER_PYTHON": sys.executable}
    env.pop("PYTHONPATH", None)
    command = [str(REPO / "spark-submit.sh"), "--master", cluster["url"], "--executor-cores",
               "1", "--executor-memory", "1g", "--total-executor-cores", "2", "--driver-memory",
               "2g", *args]
    if not wait:  # stdout read as it comes; stderr to a file, so neither pipe can fill
        return subprocess.Popen(command, stdout=subprocess.PIPE,
                                stderr=open(cwd / "submit.err", "w"), text=True, cwd=cwd,
                                env=env)
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env)


def test_the_workers_python_has_no_custseg():
    found = subprocess.run([WORKER_PYTHON, "-c", "import custseg"], capture_output=True,
                           text=True)
    assert found.returncode != 0 and "No module named 'custseg'" in found.stderr


def test_executors_import_custseg_from_the_shipped_zip(cluster, tmp_path):
    done = _submit(cluster, str(REPO / "tests/e2e/cluster_probe.py"), cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    seen = json.loads(next(line for line in done.stdout.splitlines()
                           if line.startswith("PROBE "))[6:])
    workers = {Path(cwd).relative_to(cluster["base"]).parts[0] for cwd, _, _ in seen}
    assert workers == {"worker1", "worker2"}
    assert {python for _, python, _ in seen} == {os.path.realpath(WORKER_PYTHON)} or {
        python for _, python, _ in seen} == {WORKER_PYTHON}
    assert all("custseg.zip/custseg/__init__.py" in where for _, _, where in seen)


@pytest.fixture(scope="module")
def sample(spark, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sample") / "sample.parquet")
    generate_to(spark, 600, out, seed=31)
    return out


@pytest.fixture(scope="module")
def pipeline(cluster, sample, tmp_path_factory):
    """The whole pipeline submitted to the cluster, undisturbed."""
    tmp_path = tmp_path_factory.mktemp("pipeline")
    root = str(tmp_path / "lh")
    done = _submit(cluster, str(REPO / "jobs/pipeline.py"), "--input", sample, "--lakehouse",
                   root, "--run-id", "on-the-cluster", "--set", "spark.shuffle_partitions=4",
                   "--set", "cluster.k_max=3", "--set", "cluster.resamples=2",
                   *[a for s in CLV_FAST for a in ("--set", s)], cwd=tmp_path)
    return dict(root=root, done=done)


def test_the_pipeline_runs_on_the_cluster(spark, cluster, sample, pipeline):
    root, done = pipeline["root"], pipeline["done"]
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-4000:]
    assert f"master {cluster['url']}" in said
    assert "custseg.zip/custseg/__init__.py" in said
    # both workers ran executors of the pipeline application
    apps = [a for a in _state(cluster["ui"])["completedapps"] if a["name"] == "custseg"]
    assert len(apps) == 1
    for i in (1, 2):
        assert list((cluster["base"] / f"worker{i}" / apps[0]["id"]).iterdir())

    bronze = lakehouse.read(spark, lakehouse.table_path(root, "bronze", "raw_invoices"))
    assert bronze.count() == spark.read.parquet(sample).count()
    log = lakehouse.read(spark, lakehouse.table_path(root, "silver", "refine_log")).first()
    assert log["bronze_rows"] == log["fact_rows"] + log["cancellation_rows"] + log[
        "quarantine_rows"]
    rfm = lakehouse.read(spark, lakehouse.table_path(root, "gold", "rfm_segments"))
    fact = lakehouse.read(spark, lakehouse.table_path(root, "silver", "fct_invoices"))
    customers = fact.where(F.col("customer_id").isNotNull()).select("customer_id").distinct()
    assert rfm.count() == customers.count()
    predictions = lakehouse.read(spark, lakehouse.table_path(root, "gold", "clv_predictions"))
    assert predictions.count() > 0
    assert {r[0] for r in predictions.select("pipeline_run_id").distinct().collect()} == {
        "on-the-cluster"}
    assert (Path(root) / "dashboard/report.html").stat().st_size > 1_000_000


def _executors_of(worker_dir: Path) -> list[int]:
    """Process ids of the executor JVMs working in a worker's folder."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and "CoarseGrainedExecutorBackend" in (
                    proc / "cmdline").read_text() and Path(os.readlink(proc / "cwd")
                                                           ).is_relative_to(worker_dir):
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


SILVER = ("fct_invoices", "cancellations", "quarantine", "dim_customer", "dim_product",
          "dim_datetime")
RUN_COLUMNS = {"pipeline_run_id", "ingested_at", "refined_at"}


def test_a_worker_lost_mid_stage_changes_no_table(spark, cluster, pipeline, tmp_path):
    """SIGKILL to a worker and its executor while refine runs: Spark reruns the lost tasks on
    the other worker and silver equals the undisturbed run's. Refine starts from a copy of the
    undisturbed run's bronze. Runs last: the worker stays dead."""
    root = str(tmp_path / "lh")
    shutil.copytree(Path(pipeline["root"], "bronze"), Path(root, "bronze"))
    sets = ["--set", "spark.shuffle_partitions=4"]
    job = _submit(cluster, str(REPO / "jobs/refine.py"), "--lakehouse", root, *sets,
                  cwd=tmp_path, wait=False)
    lines = []
    for line in job.stdout:
        lines.append(line)
        if "[refine] start" in line:
            break
    victim = cluster["workers"][1]
    deadline = time.time() + 60
    while not (executors := _executors_of(cluster["base"] / "worker2")):
        assert time.time() < deadline, "no executor of the refine application on worker2"
        time.sleep(0.5)
    for pid in [victim.pid, *executors]:
        os.kill(pid, signal.SIGKILL)
    out, _ = job.communicate(timeout=600)
    said = "".join(lines) + out + (tmp_path / "submit.err").read_text()
    assert job.returncode == 0, said[-4000:]
    assert "Lost executor" in said or "ExecutorLostFailure" in said, said[-4000:]
    for name in SILVER:
        got, want = (lakehouse.read(spark, lakehouse.table_path(r, "silver", name))
                     for r in (root, pipeline["root"]))
        assert want.count() > 0, name
        assert_same_rows(got, want, ignore=RUN_COLUMNS)
