"""The Airflow DAG, loaded by Airflow itself (3.3, in the venv ``make airflow`` builds)."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from custseg.cli import PIPELINE
from tests.conftest import REPO

AIRFLOW_PYTHON = REPO / ".cache/airflow-venv/bin/python"
RUN_ID = "scheduled__2026-11-23T02:00:00+00:00"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    if not AIRFLOW_PYTHON.exists():
        pytest.skip("no Airflow venv: 'make airflow' builds it ('make test' does)")
    home = tmp_path_factory.mktemp("airflow")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "CUSTSEG_HOME": "/opt/custseg",
           "CUSTSEG_INPUT": "gs://shop/invoices/latest.parquet",
           "CUSTSEG_LAKEHOUSE": "gs://shop/lakehouse", "CUSTSEG_MASTER": "yarn"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([str(AIRFLOW_PYTHON), str(REPO / "tests/e2e/airflow_dag_check.py"),
                           str(REPO / "dags")], capture_output=True, text=True, env=env,
                          cwd=home)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_dag_loads_without_errors_and_alone(loaded):
    assert loaded["import_errors"] == {}
    assert list(loaded["dags"]) == ["custseg_pipeline"]


def test_one_task_per_stage_in_pipeline_order(loaded):
    dag = loaded["dags"]["custseg_pipeline"]
    assert dag["order"] == list(PIPELINE)
    tasks = dag["tasks"]
    for before, after in zip(PIPELINE, PIPELINE[1:], strict=False):
        assert tasks[before]["downstream"] == [after]
        assert tasks[after]["upstream"] == [before]
    assert tasks[PIPELINE[0]]["upstream"] == [] and tasks[PIPELINE[-1]]["downstream"] == []
    assert dag["max_active_runs"] == 1
    assert "0 2 * * *" in dag["schedule"]


def test_each_task_submits_its_job_with_the_airflow_run_id_and_retries(loaded):
    for stage, task in loaded["dags"]["custseg_pipeline"]["tasks"].items():
        assert task["retries"] >= 1
        want = (f"/opt/custseg/spark-submit.sh --master 'yarn' /opt/custseg/jobs/{stage}.py "
                f"--lakehouse 'gs://shop/lakehouse'"
                + (" --input 'gs://shop/invoices/latest.parquet'" if stage == "ingest" else "")
                + f" --run-id '{RUN_ID}'")
        assert task["rendered"] == want
        assert (REPO / "jobs" / f"{stage}.py").exists()


def test_the_airflow_pin_is_the_optional_extra(tmp_path):
    pin = re.search(r'^airflow = \["apache-airflow==([0-9.]+)"\]',
                    (REPO / "pyproject.toml").read_text(), re.M).group(1)
    if not AIRFLOW_PYTHON.exists():
        pytest.skip("no Airflow venv")
    version = subprocess.run([str(AIRFLOW_PYTHON), "-c", "import airflow; "
                              "print(airflow.__version__)"], capture_output=True, text=True,
                             env={**os.environ, "AIRFLOW_HOME": str(tmp_path)}).stdout.split()[-1]
    assert version == pin
