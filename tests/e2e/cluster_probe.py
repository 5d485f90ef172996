"""Submitted to the standalone cluster by the test: which Python runs on the executors and where
their ``custseg`` comes from (it is not installed there, so only the shipped zip can serve)."""

import json
import sys

from pyspark.sql import SparkSession


def where(_: int) -> tuple[str, str, str]:
    """(the executor's work folder, its Python, its custseg) from inside one task."""
    import os
    import time

    import custseg

    time.sleep(0.5)  # long enough that both executors take tasks
    return os.getcwd(), sys.executable, custseg.__file__


if __name__ == "__main__":
    spark = SparkSession.builder.appName("custseg-probe").getOrCreate()
    seen = spark.sparkContext.parallelize(range(8), 8).map(where).distinct().collect()
    print("PROBE " + json.dumps(sorted(seen)), flush=True)
    spark.stop()
