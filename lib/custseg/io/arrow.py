"""Small tables between Spark and the driver's pandas, through Arrow.

PySpark converts a pandas table row by row, as Python objects, unless
``spark.sql.execution.arrow.pyspark.enabled`` is on, and it is off by default. The BTYD keys
(one row per date and distinct purchase history) are bounded by the history's length, not by
the customer count, but below that bound they grow with the customers: at a million customers
they are hundreds of thousands of rows a date, and their Python rows were most of the
driver's memory. ``toArrow`` and ``createDataFrame`` of an
Arrow table take the columnar path whatever that setting says, classic or Spark Connect, and
leave the user's session settings alone.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession


def to_pandas(df: DataFrame) -> pd.DataFrame:
    """``df`` on the driver, as pandas, through Arrow (same column types as ``toPandas``)."""
    return df.toArrow().to_pandas()


def from_pandas(spark: SparkSession, frame: pd.DataFrame, schema: str) -> DataFrame:
    """``frame`` as a DataFrame of ``schema`` (a DDL string), through Arrow.

    Arrow reads a float NaN as null, so ``frame`` should hold none (callers replace them).
    """
    return spark.createDataFrame(pa.Table.from_pandas(frame, preserve_index=False), schema)
