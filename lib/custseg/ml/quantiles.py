"""Evenly spaced quantiles by ``percentile_approx`` and buckets between them, the numbers sent
to the JVM at once."""

from __future__ import annotations

import json
import math

from pyspark.ml.feature import Bucketizer
from pyspark.sql import Column
from pyspark.sql import functions as F


def even_cuts(column: Column, parts: int, accuracy: int) -> Column:
    """``percentile_approx`` of ``column`` at 1/parts, 2/parts, ..., (parts - 1)/parts.

    The percentages go as one SQL array literal: PySpark turns a Python list into one ``lit``
    call per element, each a round trip to the JVM (999 of them for 1,000 backtest buckets).
    """
    percentages = ", ".join(repr(i / parts) for i in range(1, parts))
    return F.percentile_approx(column, F.expr(f"array({percentages})"), accuracy)


def _param_double(value: float) -> float | str:
    """A double as Spark ML's param JSON writes it (infinities and NaN as strings)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    return value


def bucketizer(splits: list[list[float]], inputs: list[str], outputs: list[str],
               handle_invalid: str = "error") -> Bucketizer:
    """A multi-column ``Bucketizer`` with these splits per column.

    PySpark hands a list param to the JVM one number per py4j call: 7,000 calls and about a
    second for the backtest's seven columns of 1,001 splits. In a classic session the JVM
    decodes them instead from one JSON string, with the splits param's own codec (the same
    doubles: Python writes each as its shortest exact repr). Spark Connect sends params in one
    message already.
    """
    out = Bucketizer(inputCols=inputs, outputCols=outputs, handleInvalid=handle_invalid)
    java = out._java_obj
    if isinstance(java, str):  # Spark Connect: the class name, not a JVM object
        return out.setSplitsArray(splits)
    text = json.dumps([[_param_double(v) for v in column] for column in splits])
    java.setSplitsArray(java.splitsArray().jsonDecode(text))
    return out
