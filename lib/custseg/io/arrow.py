"""Small tables between Spark and the driver's pandas, through Arrow.

PySpark converts a pandas table row by row, as Python objects, unless
``spark.sql.execution.arrow.pyspark.enabled`` is on, and it is off by default. The BTYD keys
(one row per date and distinct purchase history) are bounded by the history's length, not by
the customer count, but below that bound they grow with the customers: at a million customers
they are hundreds of thousands of rows a date, and their Python rows were most of the
driver's memory. ``toArrow`` and ``createDataFrame`` of an
Arrow table take the columnar path whatever that setting says, classic or Spark Connect, and
leave the user's session settings alone.

The driver's own few rows (dates, settings, one row per model or check) go the same way
(``from_rows``): a classic session turns a list of Python rows into a DataFrame through an
identity map in Python workers, which every query reading it starts on the executors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import DataType, StructType


def to_pandas(df: DataFrame) -> pd.DataFrame:
    """``df`` on the driver, as pandas, through Arrow (same column types as ``toPandas``)."""
    return df.toArrow().to_pandas()


def from_pandas(spark: SparkSession, frame: pd.DataFrame, schema: str) -> DataFrame:
    """``frame`` as a DataFrame of ``schema`` (a DDL string), through Arrow.

    Arrow reads a float NaN as null, so ``frame`` should hold none (callers replace them).
    """
    return spark.createDataFrame(pa.Table.from_pandas(frame, preserve_index=False), schema)


def from_rows(spark: SparkSession, rows: Sequence[Sequence[Any]], schema: str) -> DataFrame:
    """A few ``rows`` held on the driver as a DataFrame of ``schema`` (a DDL string), through
    Arrow.

    PySpark's ``createDataFrame`` of Python rows in a classic session is an RDD of pickled rows
    mapped in Python: each query that reads it starts Python workers on the executors (a
    second or more the first time in a JVM, a few tenths after), and executors without
    PySpark cannot run it. An Arrow table is read in the JVM. The values are those the row
    path gives: the same types, NaN kept as NaN, dates as days. Naive datetimes would be read
    in the session's time zone, as Arrow reads them; no caller passes any.
    """
    struct = DataType.fromDDL(schema)
    assert isinstance(struct, StructType), schema
    arrow = to_arrow_schema(struct)
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(arrow)
    table = pa.Table.from_arrays(
        [pa.array(list(values), type=field.type) for values, field in zip(columns, arrow,
                                                                          strict=True)],
        schema=arrow)
    return spark.createDataFrame(table, struct)
