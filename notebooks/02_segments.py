# Databricks notebook source
# MAGIC %md
# MAGIC # 02 · Segments
# MAGIC Recency, Frequency and Monetary value per customer as of a date, RFM scores and named
# MAGIC segments, and clusters with k chosen by stability, elbow and silhouette (the criteria
# MAGIC per k and the reason are in `gold/cluster_selection`), tracked in MLflow. Needs
# MAGIC notebook 01 (or `custseg refine`) first.
# MAGIC
# MAGIC **Parameters:** `lakehouse`, `as_of` (yyyy-mm-dd; empty: the day after the last invoice),
# MAGIC `settings`.

# COMMAND ----------

from custseg.runtime import notebook

dbutils = globals().get("dbutils")  # Databricks provides it
display = globals().get("display")  # Databricks provides it

p = notebook.params(dbutils, {"lakehouse": "./lakehouse", "as_of": "", "settings": ""})
cfg = notebook.config(p["settings"])
spark = notebook.session(cfg)
root = p["lakehouse"]

# COMMAND ----------

from custseg.stages.segment import segment

summary = segment(spark, root, cfg, p["as_of"] or None)
print(summary)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Segments and what characterises them

# COMMAND ----------

from pyspark.sql import functions as F

from custseg.io.lakehouse import read, table_path
from custseg.transforms import insights


def table(name):
    return read(spark, table_path(root, "gold", name))


rfm = table("rfm_segments")
as_of = rfm.agg(F.max("as_of")).first()[0]
segments = insights.at(rfm, as_of)
notebook.show(insights.segment_profile(segments).orderBy(F.desc("share_revenue")), display)
notebook.show(segments.groupBy("r_score").pivot("f_score", [1, 2, 3, 4, 5]).count()
              .orderBy(F.desc("r_score")), display)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Clusters: choice of k and profiles

# COMMAND ----------

notebook.show(insights.at(table("cluster_selection"), as_of).orderBy("k"), display)
notebook.show(insights.at(table("cluster_profiles"), as_of)
              .orderBy(F.desc("share_revenue")), display)
