# Databricks notebook source
# MAGIC %md
# MAGIC # 04 · Insights and dashboard
# MAGIC The business questions answered from the gold tables: who the best customers are, who
# MAGIC could become so, whom to target and retain, what characterises each group; then the
# MAGIC marketer's dashboard as one self-contained HTML file. Needs notebooks 01-03.
# MAGIC
# MAGIC **Parameters:** `lakehouse`, `out` (the HTML file; empty:
# MAGIC `<lakehouse>/dashboard/report.html`), `top` (rows per list), `settings`.

# COMMAND ----------

from custseg.runtime import notebook

dbutils = globals().get("dbutils")  # Databricks provides it
display = globals().get("display")  # Databricks provides it
displayHTML = globals().get("displayHTML")  # Databricks provides it

p = notebook.params(dbutils, {"lakehouse": "./lakehouse", "out": "", "top": "10",
                              "settings": ""})
cfg = notebook.config(p["settings"])
spark = notebook.session(cfg)
root = p["lakehouse"]
top = int(p["top"])

# COMMAND ----------

from pyspark.sql import functions as F

from custseg.io.lakehouse import read, table_path
from custseg.transforms import insights


def table(name):
    return read(spark, table_path(root, "gold", name))


rfm = table("rfm_segments")
as_of = rfm.agg(F.max("as_of")).first()[0]
segments = insights.at(rfm, as_of)
predictions = insights.at(table("clv_predictions"), as_of).where(
    F.col("horizon_days") == cfg["clv"]["horizon_days"])
print(f"as of {as_of}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Who are the best customers? Who could become so?

# COMMAND ----------

notebook.show(insights.best_customers(segments, predictions, top), display)
notebook.show(insights.potential_customers(segments, predictions, top), display)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Whom to retain, and what characterises each group

# COMMAND ----------

notebook.show(insights.customers_to_retain(segments, predictions, top,
                                           cfg["dashboard"]["retain_segments"]), display)
notebook.show(insights.segment_profile(segments, predictions)
              .orderBy(F.desc("share_revenue")), display, rows=50)

# COMMAND ----------

# MAGIC %md
# MAGIC ## How do they buy, and where?

# COMMAND ----------

notebook.show(table("purchase_nature").orderBy("class_order"), display)
notebook.show(table("country_activity").orderBy(F.desc("revenue")), display)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Audiences to send: the configured lists in `gold/audiences`

# COMMAND ----------

from custseg.stages.audiences import audiences

print(audiences(spark, root, cfg))
notebook.show(table("audiences").where(F.col("as_of") == as_of).groupBy("audience").count()
              .orderBy("audience"), display)

# COMMAND ----------

# MAGIC %md
# MAGIC ## The dashboard

# COMMAND ----------

from custseg.dashboard.collect import collect
from custseg.dashboard.render import render
from custseg.stages.dashboard import dashboard, default_out

out = p["out"] or default_out(root, cfg)
print(dashboard(spark, root, cfg, out))
if displayHTML is not None:
    displayHTML(render(collect(spark, root, cfg), cfg))
