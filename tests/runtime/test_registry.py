"""MLflow made ready in the background while a Spark-only stage runs."""

from __future__ import annotations

import sqlite3

import pytest

from custseg import cli
from custseg.config import load_config
from custseg.errors import ConfigError
from custseg.runtime import registry


@pytest.mark.parametrize(("stages", "expected"), [
    (cli.PIPELINE, "refine"),
    (("refine", "report", "clv"), "report"),
    (("ingest", "segment"), None),
    (("segment", "clv"), None),
    (("report",), None),
    (("refine",), None),
])
def test_mlflow_is_warmed_during_the_stage_before_the_first_that_logs(stages, expected):
    assert cli._before_mlflow(stages) == expected


def test_configure_waits_for_the_warm_up_and_finds_its_store(tmp_path):
    cfg = load_config()
    registry.warm_up(str(tmp_path), cfg)
    warming = list(registry._warming)
    experiment_id = registry.configure(str(tmp_path), cfg)
    assert warming and not any(t.is_alive() for t in warming)
    with sqlite3.connect(tmp_path / "mlflow" / "mlflow.db") as db:
        rows = db.execute("SELECT experiment_id, name FROM experiments WHERE name = ?",
                          (cfg["mlflow"]["experiment"],)).fetchall()
    assert rows == [(int(experiment_id), cfg["mlflow"]["experiment"])]


def test_a_warm_up_error_comes_from_the_stage_that_configures():
    cfg = load_config()
    registry.warm_up("s3a://bucket/lakehouse", cfg)  # remote, and no tracking server set
    with pytest.raises(ConfigError, match="mlflow.tracking_uri"):
        registry.configure("s3a://bucket/lakehouse", cfg)
