"""Whole-process behaviour: a run killed mid-ingest, spark-submit without an installed custseg."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from custseg.io import lakehouse
from custseg.io.generate import generate_to
from tests.conftest import CUSTSEG, REPO, wait_for_file

SMALL = ["--set", "spark.master=local[2]", "--set", "spark.shuffle_partitions=2",
         "--set", "spark.driver_memory=2g"]


@pytest.fixture(scope="module")
def sample(spark, tmp_path_factory):
    """20,000 generated customers (about 450,000 lines): a write that lasts a few seconds.
    Generated in the test session: ``custseg generate`` itself runs in conftest's run_sample."""
    out = str(tmp_path_factory.mktemp("gen") / "sample.parquet")
    generate_to(spark, 20000, out, seed=11)
    return out


def _bronze_rows(spark, root):
    path = lakehouse.table_path(root, "bronze", "raw_invoices")
    if not lakehouse.exists(spark, path):
        return None
    return sorted((r["source_file"], r["source_row"], r["row_hash"]) for r in
                  lakehouse.read(spark, path).select("source_file", "source_row", "row_hash")
                  .collect())


def test_ingest_killed_midway_then_rerun_equals_clean_run(spark, sample, tmp_path):
    killed_root, clean_root = str(tmp_path / "killed"), str(tmp_path / "clean")
    proc = subprocess.Popen([CUSTSEG, "ingest", "--input", sample, "--lakehouse", killed_root,
                             *SMALL], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    # killed mid-write: the batch's first data file is there, its commit is not
    table = Path(killed_root, "bronze", "raw_invoices")
    wait_for_file(table, "batch_id=*/*.parquet", proc, timeout=300)
    assert not list(table.glob("_delta_log/*[0-9].json")), "bronze committed before the kill"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _bronze_rows(spark, killed_root)
    assert partial is None or len(partial) == 0
    for root in (killed_root, clean_root):
        subprocess.run([CUSTSEG, "ingest", "--input", sample, "--lakehouse", root, *SMALL],
                       check=True, capture_output=True)
    assert _bronze_rows(spark, killed_root) == _bronze_rows(spark, clean_root)


def test_spark_submit_runs_stage_jobs_from_the_shipped_zip(spark, tmp_path, clean_run,
                                                          class_archive_dir):
    """As the Airflow DAG runs them: one spark-submit per stage, one run id for all. The whole
    pipeline through spark-submit.sh runs on the standalone cluster (test_standalone_cluster.py).
    Each job's driver maps the class archive that the clean ``custseg run`` recorded, as the
    driver's own class-load log shows."""
    assert [p.suffix for p in class_archive_dir.iterdir()] == [".jsa"], "no archive recorded"
    sample = str(tmp_path / "sample.parquet")
    generate_to(spark, 300, sample, seed=13)
    root = str(tmp_path / "lh")
    said = ""
    for job, extra in (("ingest", ["--input", sample]), ("refine", [])):
        loads = f"-Xlog:class+load=info:file={tmp_path}/class-load-{job}-%p"  # %p: each JVM's
        result = subprocess.run(
            [str(REPO / "spark-submit.sh"), "--master", "local[2]", str(REPO / f"jobs/{job}.py"),
             *extra, "--lakehouse", root, "--run-id", "submitted",
             "--set", "spark.shuffle_partitions=2"],
            capture_output=True, text=True, cwd=tmp_path,
            env={**os.environ, "JAVA_TOOL_OPTIONS": loads})
        assert result.returncode == 0, (job, result.stderr[-3000:])
        assert "custseg.zip/custseg/__init__.py" in result.stdout
        said += result.stdout
        mapped = [f for f in tmp_path.glob(f"class-load-{job}-*") if re.search(
            r" org\.apache\.spark\.SparkContext source: shared objects file \(top\)",
            f.read_text())]
        assert len(mapped) == 1, f"the {job} driver did not map the archive"
    assert "[refine]   batch" in said and "reconciles" in said
    bronze = lakehouse.read(spark, lakehouse.table_path(root, "bronze", "raw_invoices"))
    assert bronze.count() == spark.read.parquet(sample).count()
    for layer, name in (("bronze", "raw_invoices"), ("silver", "fct_invoices")):
        table = lakehouse.read(spark, lakehouse.table_path(root, layer, name))
        assert {r[0] for r in table.select("pipeline_run_id").distinct().collect()} == {
            "submitted"}, name
    bad = subprocess.run(
        [str(REPO / "spark-submit.sh"), "--master", "local[1]", str(REPO / "jobs/ingest.py"),
         "--input", str(tmp_path / "missing.csv"), "--lakehouse", root],
        capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2
    # spark-submit's Python runner merges the job's stderr into its stdout
    assert "missing.csv: input file not found" in bad.stdout + bad.stderr
