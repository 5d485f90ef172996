"""What the notebooks share: parameters from Databricks widgets or the environment, a session,
and showing a DataFrame. The notebooks run on Databricks and as plain Python alike."""

from __future__ import annotations

import os
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from custseg.config import Config, load_config


def params(dbutils: Any, defaults: dict[str, str]) -> dict[str, str]:
    """Each parameter from its widget where ``dbutils`` exists (the widget is created with the
    default), else from ``CUSTSEG_NB_<NAME>`` in the environment, else the default."""
    out = {}
    for name, default in defaults.items():
        if dbutils is not None:
            dbutils.widgets.text(name, default)
            out[name] = dbutils.widgets.get(name)
        else:
            out[name] = os.environ.get(f"CUSTSEG_NB_{name.upper()}", default)
    return out


def config(settings: str) -> Config:
    """Configuration from ``key=value`` pairs separated by ';' (the ``settings`` widget)."""
    return load_config(overrides=[s.strip() for s in settings.split(";") if s.strip()])


def session(cfg: Config) -> SparkSession:
    """The notebook's session: the running one on Databricks, a local one elsewhere."""
    from custseg.runtime.session import build_spark

    return build_spark(cfg)


def show(df: DataFrame, display: Any = None, rows: int = 20) -> None:
    """Databricks' ``display`` where it exists, else the first rows as text."""
    if display is not None:
        display(df.limit(rows))
    else:
        df.show(rows, truncate=False)
