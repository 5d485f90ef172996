"""Small tables to and from the driver through Arrow: the same values and types as PySpark's
row-by-row conversion, which the session keeps (its Arrow setting is off)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from custseg.io.arrow import from_pandas, from_rows, to_pandas

KEYS = "day int, repeat_purchases int, repeat_span_days int, age_days int"


def test_the_session_converts_row_by_row_unless_told(spark):
    assert spark.conf.get("spark.sql.execution.arrow.pyspark.enabled") == "false"


def test_to_pandas_equals_the_row_by_row_conversion(spark):
    rows = [(15000, 0, 0, 3), (15000, 2, 40, 90), (15031, 2, 40, 90), (15031, 7, 300, 301),
            (-1, 2_000_000_000, 0, 0)]
    df = (spark.createDataFrame(rows * 3, KEYS)
          .groupBy("day", "repeat_purchases", "repeat_span_days", "age_days").count()
          .withColumn("bin", F.round(F.log(F.col("count") + 1) * 1000.0)))
    got = to_pandas(df).sort_values(["day", "repeat_purchases"], ignore_index=True)
    want = df.toPandas().sort_values(["day", "repeat_purchases"], ignore_index=True)
    assert list(got.dtypes) == list(want.dtypes)
    assert [str(t) for t in got.dtypes] == ["int32"] * 4 + ["int64", "float64"]
    pd.testing.assert_frame_equal(got, want)
    assert got["count"].tolist() == [3] * 5
    assert got["bin"].tolist() == [1386.0] * 5  # round(1000 ln 4)


def test_from_pandas_gives_the_rows_and_types_of_the_schema(spark):
    frame = pd.DataFrame({"day": np.array([15000, 15031], dtype=np.int64),
                          "repeat_purchases": np.array([0, 7], dtype=np.int32),
                          "repeat_span_days": [0, 300], "age_days": [3, 301],
                          "p": [0.1 + 0.2, 1e-300]})
    df = from_pandas(spark, frame, f"{KEYS}, p double")
    assert df.dtypes == [("day", "int"), ("repeat_purchases", "int"),
                         ("repeat_span_days", "int"), ("age_days", "int"), ("p", "double")]
    assert sorted(tuple(r) for r in df.collect()) == [(15000, 0, 0, 3, 0.30000000000000004),
                                                      (15031, 7, 300, 301, 1e-300)]
    assert spark.conf.get("spark.sql.execution.arrow.pyspark.enabled") == "false"


def _lineage(df) -> str:
    """The RDDs the JVM runs for ``df``."""
    return df._jdf.queryExecution().executedPlan().execute().toDebugString()


ROWS_SCHEMA = ("as_of date, k int, n long, name string, value double, chosen boolean, "
               "cut float")


def test_from_rows_gives_the_row_by_row_values_without_python_on_the_executors(spark):
    rows = [(dt.date(2011, 12, 10), 3, 2**40, "Champions", float("nan"), np.bool_(True), 0.5),
            (dt.date(1970, 1, 1), -1, None, "", -0.0, False, None),
            (dt.date(2011, 2, 28), None, 0, "Café ✓", np.float64(1e-300), None, -2.25),
            (None, 2**31 - 1, -(2**63), None, 0.1 + 0.2, True, 3.4e38)]
    got = from_rows(spark, rows, ROWS_SCHEMA)
    # the row path takes Python scalars only; numpy ones (as from pandas) are accepted here
    want = spark.createDataFrame([tuple(v.item() if isinstance(v, np.generic) else v for v in r)
                                  for r in rows], ROWS_SCHEMA)
    assert got.dtypes == want.dtypes == [
        ("as_of", "date"), ("k", "int"), ("n", "bigint"), ("name", "string"),
        ("value", "double"), ("chosen", "boolean"), ("cut", "float")]
    # repr: NaN and -0.0 compare as written, not as equal floats
    assert [repr(tuple(r)) for r in got.collect()] == [repr(tuple(r)) for r in want.collect()]
    assert "PythonRDD" in _lineage(want)  # the row path maps the rows in Python workers
    assert "PythonRDD" not in _lineage(got)


def test_from_rows_of_nothing_is_an_empty_frame_of_the_schema(spark):
    empty = from_rows(spark, [], "customer_id int, invoice_date timestamp, amount double")
    assert empty.dtypes == [("customer_id", "int"), ("invoice_date", "timestamp"),
                            ("amount", "double")]
    assert empty.count() == 0
