"""Silver transforms: parse bronze text into typed fields, classify each line (fact,
cancellation or quarantine with a reason) and derive the dimensions. DataFrame in,
DataFrame out; the refine stage writes them."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from custseg.config import Config
from custseg.io.sources import SOURCE_FIELDS

ROUTE_FACT, ROUTE_CANCEL, ROUTE_QUARANTINE = "fact", "cancellation", "quarantine"
# Silver lineage leads back to the bronze row; only quarantine repeats its ``row_hash`` (to find
# the row a duplicate copies), as 64 random hex characters would be most of the fact's bytes.
LINEAGE = ["batch_id", "source_file", "source_row"]
_INT_MAX = 2147483647


def parse_whole_number(text: Column) -> Column:
    """Text to int when it is a finite whole number ("6", "6.0", "1e2"); else null."""
    d = F.trim(text).try_cast("double")
    ok = d.isNotNull() & ~F.isnan(d) & (F.abs(d) <= _INT_MAX) & (d == F.floor(d))
    return F.when(ok, d.cast("int"))


def parse_decimal_number(text: Column) -> Column:
    """Text to double when it is a finite number; else null."""
    d = F.trim(text).try_cast("double")
    return F.when(d.isNotNull() & ~F.isnan(d) & (F.abs(d) < float("inf")), d)


def parse_timestamp(text: Column, formats: list[str]) -> Column:
    """Text to timestamp with the first matching pattern; null when none matches."""
    trimmed = F.trim(text)
    return F.coalesce(*[F.try_to_timestamp(trimmed, F.lit(fmt)) for fmt in formats])


def _blank(col: Column) -> Column:
    return col.isNull() | (F.trim(col) == "")


def parse_fields(bronze: DataFrame, cfg: Config) -> DataFrame:
    """Typed columns (``p_*``) and the first parse failure (``parse_reason``) per row."""
    cols = cfg["input"]["columns"]
    amount_only = not (cols.get("quantity") and cols.get("unit_price"))
    qty_text = F.col("quantity")
    price_text = F.col("amount") if amount_only else F.col("unit_price")
    price_name = "amount" if amount_only else "unit_price"
    df = bronze.select(
        "*",
        F.trim("invoice_no").alias("p_invoice_no"),
        F.coalesce(F.trim("stock_code"), F.lit("UNKNOWN") if not cols.get("stock_code")
                   else F.lit(None).cast("string")).alias("p_stock_code"),
        parse_timestamp(F.col("invoice_date"), cfg["input"]["date_formats"])
        .alias("p_invoice_date"),
        (F.lit(1) if amount_only else parse_whole_number(qty_text)).alias("p_quantity"),
        parse_decimal_number(price_text).alias("p_unit_price"),
        parse_whole_number(F.col("customer_id")).alias("p_customer_id"),
    )
    checks: list[tuple[Column, str]] = [
        (_blank(F.col("invoice_no")), "missing_invoice_no"),
        (_blank(F.col("invoice_date")), "missing_invoice_date"),
        (F.col("p_invoice_date").isNull(), "unparseable_invoice_date"),
    ]
    if not amount_only:
        checks += [
            (_blank(qty_text), "missing_quantity"),
            (F.col("p_quantity").isNull(), "unparseable_quantity"),
        ]
    checks += [
        (_blank(price_text), f"missing_{price_name}"),
        (F.col("p_unit_price").isNull(), f"unparseable_{price_name}"),
        (~_blank(F.col("customer_id")) & F.col("p_customer_id").isNull(),
         "unparseable_customer_id"),
        (F.col("p_stock_code").isNull() | (F.col("p_stock_code") == ""), "missing_stock_code"),
        *implausible(cfg, price_name, amount_only),
    ]
    reason: Column = F.lit(None).cast("string")
    for cond, name in reversed(checks):
        reason = F.when(cond, F.lit(name)).otherwise(reason)
    return df.withColumn("parse_reason", reason)


def implausible(cfg: Config, price_name: str, amount_only: bool) -> list[tuple[Column, str]]:
    """Checks on parsed values a retailer's data cannot hold: an invoice dated after the file
    was ingested (plus ``refine.max_future_days``) or before ``refine.earliest_date``, and
    quantities or prices beyond the configured bounds. Such a line is quarantined, so it can
    never move the default as-of date or a feature."""
    r = cfg["refine"]
    when = F.col("p_invoice_date")
    checks = [(when > F.col("ingested_at") + F.make_interval(days=F.lit(r["max_future_days"])),
               "future_invoice_date")]
    if r["earliest_date"]:
        checks.append((when < F.to_timestamp(F.lit(r["earliest_date"])), "too_early_invoice_date"))
    if not amount_only:
        checks.append((F.abs("p_quantity") > r["max_abs_quantity"], "implausible_quantity"))
    checks.append((F.abs("p_unit_price") > r["max_abs_unit_price"], f"implausible_{price_name}"))
    return checks


BROADCAST_ROWS_MAX = 2_000_000


def broadcast_if_small(df: DataFrame, rows: int) -> DataFrame:
    return F.broadcast(df) if rows <= BROADCAST_ROWS_MAX else df


def duplicate_copies(
    batch: DataFrame, earlier_hashes: DataFrame | None
) -> tuple[DataFrame, int]:
    """``source_file``, ``source_row`` of the batch rows that copy an earlier row (one with the
    same ``row_hash`` earlier in the batch, by file then row, or in an earlier batch), cached,
    and how many there are. The caller unpersists them.

    Found on narrow columns so the batch's full rows are never shuffled: a count of a 64-bit
    hash of ``row_hash`` picks the few candidates, and only those are ranked on the exact hash.
    """
    keys = batch.select("row_hash", "source_file", "source_row",
                        F.xxhash64("row_hash").alias("_h"))
    repeated = keys.groupBy("_h").count().where(F.col("count") > 1).select("_h").persist()
    try:
        first = Window.partitionBy("row_hash").orderBy("source_file", "source_row")
        copies = (keys.join(broadcast_if_small(repeated, repeated.count()), "_h", "left_semi")
                  .withColumn("_n", F.row_number().over(first))
                  .where(F.col("_n") > 1).select("source_file", "source_row"))
        if earlier_hashes is not None:
            seen = (keys.join(earlier_hashes.select("row_hash"), "row_hash", "left_semi")
                    .select("source_file", "source_row"))
            copies = copies.unionByName(seen).distinct()
        copies = copies.persist()
        n = copies.count()
    finally:
        repeated.unpersist()
    return copies, n


def classify(batch: DataFrame, copies: DataFrame | None, cfg: Config) -> DataFrame:
    """Add ``route`` (fact, cancellation, quarantine) and ``reason`` to every bronze row.

    ``copies`` holds the rows to quarantine as duplicates (see ``duplicate_copies``).
    """
    if copies is None:
        df = batch.withColumn("_copy", F.lit(False))
    else:
        df = batch.join(copies.withColumn("_copy", F.lit(True)),
                        ["source_file", "source_row"], "left")
    df = parse_fields(df, cfg)
    prefix = cfg["refine"]["cancellation_prefix"].upper()
    is_dup = F.coalesce(F.col("_copy"), F.lit(False))
    is_cancel = F.upper(F.col("p_invoice_no")).startswith(prefix)
    not_sale = (F.col("p_quantity") <= 0) | (F.col("p_unit_price") <= 0)
    reason = (F.when(is_dup, F.lit("duplicate"))
              .when(F.col("parse_reason").isNotNull(), F.col("parse_reason"))
              .when(is_cancel, F.lit(None))
              .when(not_sale, F.lit("not_a_sale")))
    route = (F.when(reason.isNotNull(), F.lit(ROUTE_QUARANTINE))
             .when(is_cancel, F.lit(ROUTE_CANCEL))
             .otherwise(F.lit(ROUTE_FACT)))
    return df.withColumn("reason", reason).withColumn("route", route).drop("_copy")


_QUARANTINE_ONLY = {*SOURCE_FIELDS, "row_hash"} - {"description", "country"}


def routed_for_writes(classified: DataFrame) -> DataFrame:
    """The classified rows as the three writes need them: the source text that only quarantine
    keeps is null on other rows, so a cache of this holds each sale line once, parsed."""
    kept = F.col("route") == ROUTE_QUARANTINE
    return classified.select(*[
        F.when(kept, F.col(c)).alias(c) if c in _QUARANTINE_ONLY else F.col(c)
        for c in classified.columns if c not in ("parse_reason", "ingested_at")
    ])


def datetime_key(ts: Column) -> Column:
    """yyyyMMddHHmm as a long: the fact's key into ``dim_datetime``."""
    return F.date_format(ts, "yyyyMMddHHmm").cast("long")


def _typed_lines(classified: DataFrame, route: str, amount_name: str,
                 with_datetime_key: bool) -> DataFrame:
    """Parsed columns of the rows routed to ``route``, with quantity x unit price."""
    keys = ([datetime_key(F.col("p_invoice_date")).alias("datetime_key")]
            if with_datetime_key else [])
    return classified.where(F.col("route") == route).select(
        F.col("p_invoice_no").alias("invoice_no"),
        F.col("p_stock_code").alias("stock_code"),
        F.col("description"),
        F.col("p_quantity").alias("quantity"),
        F.col("p_unit_price").alias("unit_price"),
        (F.col("p_quantity") * F.col("p_unit_price")).alias(amount_name),
        F.col("p_invoice_date").alias("invoice_date"),
        *keys,
        F.col("p_customer_id").alias("customer_id"),
        F.trim("country").alias("country"),
        *LINEAGE,
    )


def fact_rows(classified: DataFrame) -> DataFrame:
    """The fact table's columns for rows routed to the fact."""
    return _typed_lines(classified, ROUTE_FACT, "total_price", with_datetime_key=True)


def cancellation_rows(classified: DataFrame) -> DataFrame:
    """Cancellation lines with customer and (negative) amount, for return-rate features."""
    return _typed_lines(classified, ROUTE_CANCEL, "amount", with_datetime_key=False)


def quarantine_rows(classified: DataFrame) -> DataFrame:
    """Quarantined rows as they were in bronze, with the reason."""
    return classified.where(F.col("route") == ROUTE_QUARANTINE).select(
        *SOURCE_FIELDS, *LINEAGE, "row_hash", "reason",
    )


FACT_SCHEMA = T.StructType([
    T.StructField("invoice_no", T.StringType(), False),
    T.StructField("stock_code", T.StringType(), False),
    T.StructField("description", T.StringType(), True),
    T.StructField("quantity", T.IntegerType(), False),
    T.StructField("unit_price", T.DoubleType(), False),
    T.StructField("total_price", T.DoubleType(), False),
    T.StructField("invoice_date", T.TimestampType(), False),
    T.StructField("datetime_key", T.LongType(), False),
    T.StructField("customer_id", T.IntegerType(), True),
    T.StructField("country", T.StringType(), True),
    T.StructField("batch_id", T.StringType(), False),
    T.StructField("source_file", T.StringType(), False),
    T.StructField("source_row", T.LongType(), False),
    T.StructField("pipeline_run_id", T.StringType(), True),
])


def dim_customer(fact: DataFrame) -> DataFrame:
    """One row per identified customer: main country, first and last purchase."""
    known = fact.where(F.col("customer_id").isNotNull())
    by_country = known.groupBy("customer_id", "country").agg(
        F.count("*").alias("n"), F.max("invoice_date").alias("last"))
    country = by_country.groupBy("customer_id").agg(
        F.max_by("country", F.struct("n", "last", "country")).alias("country"))
    dates = known.groupBy("customer_id").agg(
        F.min("invoice_date").alias("first_purchase"),
        F.max("invoice_date").alias("last_purchase"))
    return dates.join(country, "customer_id").select(
        "customer_id", "country", "first_purchase", "last_purchase")


def dim_product(fact: DataFrame, non_product_codes: list[str]) -> DataFrame:
    """One row per stock code: its most frequent description and a non-product flag."""
    described = fact.groupBy("stock_code", "description").count()
    products = described.groupBy("stock_code").agg(
        F.max_by("description", F.struct(F.col("description").isNotNull(), "count",
                                         "description")).alias("description"))
    codes = [c.upper() for c in non_product_codes]
    return products.select(
        "stock_code", "description",
        F.upper("stock_code").isin(codes).alias("is_non_product"),
    )


def dim_datetime(fact: DataFrame) -> DataFrame:
    """One row per invoice minute in the fact: calendar attributes for reporting."""
    ts = F.col("invoice_datetime")
    return (fact.select("datetime_key", F.col("invoice_date").alias("invoice_datetime"))
            .dropDuplicates(["datetime_key"])
            .select(
                "datetime_key", "invoice_datetime",
                F.to_date(ts).alias("date"),
                F.year(ts).alias("year"),
                F.quarter(ts).alias("quarter"),
                F.month(ts).alias("month"),
                ((F.dayofweek(ts) + 5) % 7 + 1).alias("day_of_week"),
                F.date_format(ts, "EEEE").alias("day_name"),
                F.weekofyear(ts).alias("week_of_year"),
                F.hour(ts).alias("hour"),
            ))
