"""Synthetic data: deterministic for a seed, in the UCI layout, with the shapes asked for."""

from __future__ import annotations

from pyspark.sql import functions as F

from custseg.io.generate import generate


def _digest(df):
    h = F.pmod(F.xxhash64(*df.columns), F.lit(1 << 31))
    return df.select(F.sum(h).alias("h"), F.count("*").alias("n")).first()


def test_same_seed_same_rows_whatever_the_partitioning(spark):
    a = generate(spark, 300, seed=5)
    b = generate(spark, 300, seed=5).repartition(7)
    c = generate(spark, 300, seed=6)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_layout_and_shape(spark):
    df = generate(spark, 2000, seed=3).cache()
    assert df.columns == ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate",
                          "UnitPrice", "CustomerID", "Country"]
    n = df.count()
    assert 20 * 2000 * 0.5 < n < 20 * 2000 * 2
    stats = df.select(
        F.countDistinct("CustomerID").alias("customers"),
        F.avg(F.col("CustomerID").isNull().cast("int")).alias("anon_share"),
        F.sum(F.col("InvoiceNo").startswith("C").cast("int")).alias("cancellations"),
        F.sum(F.col("InvoiceDate").isNull().cast("int")).alias("no_date"),
        F.sum((F.col("UnitPrice") == 0).cast("int")).alias("free"),
        F.min("InvoiceDate").alias("first"), F.max("InvoiceDate").alias("last"),
        F.avg((F.col("Country") == "United Kingdom").cast("int")).alias("uk"),
    ).first()
    assert 1600 < stats["customers"] <= 2000
    assert 0.03 < stats["anon_share"] < 0.25
    assert stats["cancellations"] > 0 and stats["no_date"] > 0 and stats["free"] > 0
    assert str(stats["first"]).startswith("2010-12") and str(stats["last"]).startswith("2011-12")
    assert 0.8 < stats["uk"] < 0.97
    assert n - df.dropDuplicates().count() > 0
    orders = df.where(F.col("CustomerID").isNotNull()).groupBy("CustomerID").agg(
        F.countDistinct("InvoiceNo").alias("k"))
    q = orders.select(F.percentile_approx("k", [0.5, 0.99], 10000).alias("q")).first()["q"]
    assert q[1] >= 4 * q[0]
    nov_dec = df.where(F.month("InvoiceDate").isin(11, 12)).count()
    assert nov_dec / n > 2 / 12
    df.unpersist()
