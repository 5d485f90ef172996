"""The Databricks-format notebooks run end to end as plain Python on a small generated sample,
in order, each reading its parameters from the environment (no ``dbutils`` here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from custseg.io import lakehouse
from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))


def test_notebooks_are_in_databricks_source_format():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"]
    for path in NOTEBOOKS:
        text = path.read_text(encoding="utf-8")
        assert text.startswith("# Databricks notebook source\n"), path.name
        cells = text.split("\n# COMMAND ----------\n")
        assert len(cells) >= 3, path.name
        assert any(c.lstrip("\n").startswith("# MAGIC %md") for c in cells), path.name
        assert "notebook.params(dbutils" in text, path.name
        # the library does the work: no Spark ML or window logic copied into a notebook
        assert not re.search(r"GBTRegressor|KMeans\(|Window\.|percentile_approx", text), path.name


@pytest.fixture(scope="module")
def ran(notebook_run):
    return notebook_run


def test_notebooks_build_every_table(ran, spark):
    root = ran["root"]
    for layer, name in [("bronze", "raw_invoices"), ("silver", "fct_invoices"),
                        ("gold", "purchase_nature"), ("gold", "country_activity"),
                        ("gold", "rfm_segments"), ("gold", "cluster_profiles"),
                        ("gold", "clv_predictions"), ("gold", "clv_backtest"),
                        ("gold", "audiences")]:
        assert lakehouse.exists(spark, lakehouse.table_path(root, layer, name)), name
    raw = lakehouse.read(spark, lakehouse.table_path(root, "bronze", "raw_invoices")).count()
    log = lakehouse.read(spark, lakehouse.table_path(root, "silver", "refine_log")).first()
    assert raw == log["bronze_rows"] == (log["fact_rows"] + log["cancellation_rows"]
                                         + log["quarantine_rows"])
    # as of the notebooks' date (the dashboard tests may add an earlier one)
    as_of = ran["ns"]["04"]["as_of"]
    customers = lakehouse.read(spark, lakehouse.table_path(root, "gold", "rfm_segments")) \
        .where(f"as_of = DATE'{as_of}'").count()
    scored = lakehouse.read(spark, lakehouse.table_path(root, "gold", "clv_predictions")) \
        .where(f"as_of = DATE'{as_of}'").count()
    assert customers == scored > 200


def test_notebook_answers_match_the_tables(ran, spark):
    ns = ran["ns"]["04"]
    best = ns["insights"].best_customers(ns["segments"], ns["predictions"], 5).collect()
    assert 0 < len(best) <= 5 and {r["segment"] for r in best} == {"Champions"}
    champions = ns["segments"].where("segment = 'Champions'").orderBy("monetary", ascending=False)
    assert [r["customer_id"] for r in best] == [r["customer_id"] for r in champions.take(5)]
    assert ran["out"].stat().st_size > 3_000_000
    assert "custseg dashboard" in ran["out"].read_text(encoding="utf-8")[:20000]


def test_params_prefer_widgets_over_environment(monkeypatch):
    from custseg.runtime.notebook import params

    class Widgets:
        def __init__(self):
            self.values = {"lakehouse": "dbfs:/lakehouse"}

        def text(self, name, default):
            self.values.setdefault(name, default)

        def get(self, name):
            return self.values[name]

    class DbUtils:
        widgets = Widgets()

    monkeypatch.setenv("CUSTSEG_NB_LAKEHOUSE", "/from/env")
    assert params(None, {"lakehouse": "./lakehouse", "as_of": ""}) == {
        "lakehouse": "/from/env", "as_of": ""}
    assert params(DbUtils(), {"lakehouse": "./lakehouse", "as_of": ""}) == {
        "lakehouse": "dbfs:/lakehouse", "as_of": ""}


def test_notebooks_leave_the_session_usable(ran, spark):
    assert spark.range(3).count() == 3
    assert Path(ran["root"]).is_dir()
