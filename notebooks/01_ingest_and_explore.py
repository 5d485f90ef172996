# Databricks notebook source
# MAGIC %md
# MAGIC # 01 · Ingest and explore
# MAGIC Lands an invoice file in the lakehouse (bronze, exactly once), refines it into the silver
# MAGIC star schema (bad rows quarantined with a reason) and builds the gold reports; then looks
# MAGIC at what came in. Every step calls the `custseg` library; nothing here re-implements it.
# MAGIC
# MAGIC **Parameters** (widgets on Databricks, `CUSTSEG_NB_<NAME>` variables elsewhere):
# MAGIC `input` (an .xlsx, .csv or .parquet file; empty: a generated sample), `lakehouse` (folder
# MAGIC or URI), `sample_customers`, `settings` (`key=value` pairs separated by `;`).
# MAGIC On Databricks, install the custseg wheel on the cluster first (see the README).

# COMMAND ----------

from custseg.runtime import notebook

dbutils = globals().get("dbutils")  # Databricks provides it
display = globals().get("display")  # Databricks provides it

p = notebook.params(dbutils, {"input": "", "lakehouse": "./lakehouse",
                              "sample_customers": "2000", "settings": ""})
cfg = notebook.config(p["settings"])
spark = notebook.session(cfg)
root = p["lakehouse"]

# COMMAND ----------

# MAGIC %md
# MAGIC ## Input
# MAGIC Without an `input`, a synthetic sample in the UCI layout is generated into the lakehouse.

# COMMAND ----------

from custseg.io.generate import generate_to
from custseg.io.lakehouse import normalise_root

source = p["input"]
if not source:
    source = f"{normalise_root(root)}/landing/sample.parquet"
    lines = generate_to(spark, int(p["sample_customers"]), source, seed=7)
    print(f"generated {lines:,} lines for {int(p['sample_customers']):,} customers: {source}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Bronze, silver, gold
# MAGIC Re-running this cell adds nothing: the file's content hash is its batch id.

# COMMAND ----------

from custseg.stages.ingest import ingest
from custseg.stages.refine import refine
from custseg.stages.report import report

for summary in (ingest(spark, source, root, cfg), refine(spark, root, cfg),
                report(spark, root, cfg)):
    print(summary)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Explore
# MAGIC Reconciliation per batch, rejected rows by reason, revenue by month, purchase nature and
# MAGIC country activity.

# COMMAND ----------

from pyspark.sql import functions as F

from custseg.io.lakehouse import read, table_path


def table(layer, name):
    return read(spark, table_path(root, layer, name))


notebook.show(table("silver", "refine_log"), display)
notebook.show(table("silver", "quarantine").groupBy("reason").count()
              .orderBy(F.desc("count")), display)
notebook.show(table("gold", "report_year_invoices").orderBy("year", "month"), display)
notebook.show(table("gold", "purchase_nature").orderBy("class_order"), display)
notebook.show(table("gold", "country_activity").orderBy(F.desc("revenue")), display)
