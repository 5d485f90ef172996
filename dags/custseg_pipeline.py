"""Airflow DAG: the custseg pipeline, one task per stage, each a ``spark-submit.sh`` job.

All tasks of a DAG run share Airflow's ``run_id`` as the custseg ``--run-id``, so every table and
MLflow run they write names the same pipeline run. Copy (or symlink) this file into the DAGs
folder and set these environment variables for the scheduler and workers:

- ``CUSTSEG_HOME``: the custseg checkout on the worker (holds ``spark-submit.sh``);
- ``CUSTSEG_INPUT``: the invoice file or folder to ingest on each run;
- ``CUSTSEG_LAKEHOUSE``: the lakehouse root (a folder, or an ``s3a://``/``gs://`` URI);
- ``CUSTSEG_MASTER``: the Spark master (``yarn``, ``spark://host:7077``; default ``local[*]``);
- ``CUSTSEG_SCHEDULE``: a cron expression (default: 02:00 every day).

Exit codes: 2 (bad input or configuration) and 4 (another run holds the lakehouse) fail the
task like any other; the retries cover 4, and a 2 fails again until the input is fixed.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, chain

STAGES = ("ingest", "refine", "segment", "report", "clv", "audiences", "drift",
          "dashboard")


HOME = os.environ.get("CUSTSEG_HOME", "/opt/custseg")

with DAG(
    dag_id="custseg_pipeline",
    description="customer segments and lifetime value: ingest to dashboard",
    schedule=os.environ.get("CUSTSEG_SCHEDULE", "0 2 * * *"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=5),
                  "retry_exponential_backoff": True},
    params={"input": os.environ.get("CUSTSEG_INPUT", ""),
            "lakehouse": os.environ.get("CUSTSEG_LAKEHOUSE", f"{HOME}/lakehouse"),
            "master": os.environ.get("CUSTSEG_MASTER", "local[*]")},
    tags=["custseg"],
) as dag:
    tasks = []
    for stage in STAGES:
        extra = " --input '{{ params.input }}'" if stage == "ingest" else ""
        tasks.append(BashOperator(
            task_id=stage,
            bash_command=(f"{HOME}/spark-submit.sh --master '{{{{ params.master }}}}' "
                          f"{HOME}/jobs/{stage}.py --lakehouse '{{{{ params.lakehouse }}}}'"
                          f"{extra} --run-id '{{{{ run_id }}}}'"),
            cwd=HOME,
        ))
    chain(*tasks)
