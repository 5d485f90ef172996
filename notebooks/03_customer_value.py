# Databricks notebook source
# MAGIC %md
# MAGIC # 03 · Customer value
# MAGIC Next-period spend with its 80% interval and a Low/Mid/High tier per customer. Every
# MAGIC model family (a hurdle GBT, BG/NBD and Pareto/NBD with Gamma-Gamma, the past spend
# MAGIC rate, a blend) is trained on earlier cutoffs, judged out of time at several origins with
# MAGIC bootstrap intervals, and registered in MLflow; the champion, whatever its family,
# MAGIC scores every customer. Needs notebook 01.
# MAGIC
# MAGIC **Parameters:** `lakehouse`, `as_of` (empty: the day after the last invoice),
# MAGIC `horizon_days` (empty: `clv.horizon_days`), `backtest` (`true` scores at `as_of` and
# MAGIC compares with what customers then spent), `settings`.

# COMMAND ----------

from custseg.runtime import notebook

dbutils = globals().get("dbutils")  # Databricks provides it
display = globals().get("display")  # Databricks provides it

p = notebook.params(dbutils, {"lakehouse": "./lakehouse", "as_of": "", "horizon_days": "",
                              "backtest": "false", "settings": ""})
cfg = notebook.config(p["settings"])
spark = notebook.session(cfg)
root = p["lakehouse"]

# COMMAND ----------

from custseg.stages.clv import clv

summary = clv(spark, root, cfg, p["as_of"] or None,
              int(p["horizon_days"]) if p["horizon_days"] else None,
              p["backtest"].lower() == "true")
print(summary)

# COMMAND ----------

# MAGIC %md
# MAGIC ## How good is it? The backtest, model by model, and by predicted decile

# COMMAND ----------

from pyspark.sql import functions as F

from custseg.io.lakehouse import read, table_path


def table(name):
    return read(spark, table_path(root, "gold", name))


backtest = table("clv_backtest")
when = backtest.agg(F.max("as_of")).first()[0]
latest = backtest.where(F.col("as_of") == when)
means = latest.where(F.col("origin").isNull())
# each model's mean over the origins (origin empty; its one origin if only one) with its
# 90% interval
notebook.show((means if means.limit(1).count() else latest)
              .select("model", "role", "served", "model_version", "normalised_gini",
                      "normalised_gini_low", "normalised_gini_high", "spearman",
                      "top_decile_share", "tier_macro_f1", "interval_coverage")
              .orderBy(F.desc("normalised_gini")), display)
served = backtest.where((F.col("as_of") == when) & F.col("served").contains("spend")) \
    .select("model").first()
notebook.show(table("clv_backtest_deciles")
              .where((F.col("as_of") == when) & (F.col("origin") == when)
                     & (F.col("model") == (served[0] if served else "blend")))
              .orderBy("decile"), display)
# expected against actual purchases: by repeat purchases before, and over the horizon
notebook.show(table("clv_calibration").where(F.col("as_of") == when).orderBy("kind", "x"),
              display)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Predictions

# COMMAND ----------

predictions = table("clv_predictions")
latest = predictions.agg(F.max("as_of")).first()[0]
scored = predictions.where(F.col("as_of") == latest)
notebook.show(scored.groupBy("predicted_tier").agg(
    F.count("*").alias("customers"), F.sum("predicted_spend").alias("predicted_spend")), display)
notebook.show(scored.orderBy(F.desc("predicted_spend")), display)
