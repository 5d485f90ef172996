"""The Spark settings the JVMs custseg launches start with: ``LAUNCH_CONF`` for its own
sessions and ``spark-submit.sh``'s jobs, the Delta and generated-class parts for the tests'
Connect server. Apart from ``session`` so that ``spark-submit.sh`` reads them without
importing pyspark."""

from __future__ import annotations

DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
# Spark keeps the classes it generates for queries and expressions in a cache of 100 by
# default, and one run plans about a thousand distinct ones, so it compiled many of them again:
# on an 800-customer run, 1,608 compilations (42.6 s of Janino) against 1,012 (24.1 s) with
# room for all. Static: it is set where a JVM starts.
CODEGEN_CACHE = {"spark.sql.codegen.cache.maxEntries": "2000"}
LAUNCH_CONF = {**DELTA_CONF, **CODEGEN_CACHE, "spark.sql.session.timeZone": "UTC",
               "spark.ui.showConsoleProgress": "false"}
