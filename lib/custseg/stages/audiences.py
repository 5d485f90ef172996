"""Audiences: the customer lists a CRM or an ads tool loads, built from the gold tables.

One row per customer as of a segmented date: country, RFM segment and value tier, cluster and
its name, the predicted spend with its interval and P(alive) when the clv stage scored that
date, and the recommended action of the segment. Filters pick an audience; named audiences
come from configuration. Files are written by Spark (one file, or a folder of parts for large
lists), never through the driver.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from custseg.config import Config
from custseg.errors import InputError
from custseg.io import lakehouse
from custseg.io.catalog import CLV_PREDICTIONS, CUSTOMER_CLUSTERS, RFM_SEGMENTS
from custseg.ml.drift import as_of_dates
from custseg.runtime import memo
from custseg.runtime.summary import StageSummary

AUDIENCES = ("gold", "audiences")
COLUMNS = ("customer_id", "country", "segment", "value_tier", "cluster", "cluster_name",
           "predicted_spend", "predicted_spend_p10", "predicted_spend_p90", "predicted_tier",
           "p_alive", "action", "as_of")
# the type of each column a lakehouse may not have yet (no clusters, not scored by clv)
OPTIONAL_TYPES = {"cluster": "int", "cluster_name": "string", "predicted_spend": "double",
                  "predicted_spend_p10": "double", "predicted_spend_p90": "double",
                  "predicted_tier": "string", "p_alive": "double"}
# A cell starting with one of these runs as a formula in a spreadsheet (CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class Filters:
    """Who is in an audience: any of the segments, clusters and tiers given (an empty list
    keeps all), and at least ``min_p_alive`` when given."""

    segments: list[str] = field(default_factory=list)
    clusters: list[int] = field(default_factory=list)
    tiers: list[str] = field(default_factory=list)
    min_p_alive: float | None = None

    @classmethod
    def of(cls, spec: Config) -> Filters:
        """From a configured audience (keys segments, clusters, tiers, min_p_alive)."""
        return cls(list(spec.get("segments") or []), list(spec.get("clusters") or []),
                   list(spec.get("tiers") or []), spec.get("min_p_alive"))


def _gold(spark: SparkSession, root: str, name: str) -> DataFrame | None:
    path = lakehouse.table_path(root, "gold", name)
    return lakehouse.read(spark, path) if lakehouse.exists(spark, path) else None


def segmented_dates(spark: SparkSession, root: str) -> list[dt.date]:
    """The as-of dates in ``gold/rfm_segments``, oldest first."""
    rfm = _gold(spark, root, RFM_SEGMENTS)
    if rfm is None:
        raise InputError(f"{lakehouse.table_path(root, 'gold', RFM_SEGMENTS)}: no segments; "
                         "run 'custseg segment' first")
    return as_of_dates(rfm)


def resolve_date(spark: SparkSession, root: str, as_of: str | None) -> dt.date:
    """--as-of when it was segmented, else the latest segmented date."""
    from custseg.io.preflight import parse_as_of

    dates = segmented_dates(spark, root)
    if not as_of:
        return dates[-1]
    day = parse_as_of(as_of)
    if day not in dates:
        raise InputError(f"--as-of {day}: not segmented (segmented dates: "
                         f"{', '.join(map(str, dates))})")
    return day


def customers(spark: SparkSession, root: str, as_of: dt.date, cfg: Config) -> DataFrame:
    """Every segmented customer at ``as_of`` with the columns of ``COLUMNS``."""
    day = F.lit(as_of)
    rfm = _gold(spark, root, RFM_SEGMENTS).where(F.col("as_of") == day)  # type: ignore[union-attr]
    out = rfm.select("customer_id", "country", "segment", "value_tier")
    clusters = _gold(spark, root, CUSTOMER_CLUSTERS)
    if clusters is not None:
        out = out.join(clusters.where(F.col("as_of") == day)
                       .select("customer_id", "cluster", "cluster_name"), "customer_id", "left")
    value = _gold(spark, root, CLV_PREDICTIONS)
    if value is not None:  # scored at this date over the configured horizon
        scored = value.where((F.col("as_of") == day)
                             & (F.col("horizon_days") == cfg["clv"]["horizon_days"]))
        out = out.join(scored.select("customer_id", *COLUMNS[6:11]), "customer_id", "left")
    actions = cfg["dashboard"]["actions"]
    action = F.lit(None).cast("string")
    for name, text in actions.items():
        action = F.when(F.col("segment") == name, F.lit(text)).otherwise(action)
    out = out.withColumn("action", action).withColumn("as_of", day)
    return out.select(*[F.col(c) if c in out.columns
                        else F.lit(None).cast(OPTIONAL_TYPES[c]).alias(c) for c in COLUMNS])


def check_names(filters: Filters, cfg: Config, where: str = "") -> None:
    """Refuse a segment or tier name that is not configured, naming the known ones (no Spark
    needed), or a P(alive) outside [0, 1]."""
    known = {
        "segment": [s["name"] for s in cfg["segment"]["segments"]],
        "tier": [t["name"] for t in cfg["segment"]["value_tiers"]],
    }
    for kind, given in (("segment", filters.segments), ("tier", filters.tiers)):
        unknown = [g for g in given if g not in known[kind]]
        if unknown:
            raise InputError(f"{where}unknown {kind} {', '.join(map(repr, unknown))} (known: "
                             f"{', '.join(known[kind])})")
    if filters.min_p_alive is not None and not 0 <= filters.min_p_alive <= 1:
        raise InputError(f"{where}min_p_alive must be between 0 and 1, got "
                         f"{filters.min_p_alive}")


def check_filters(spark: SparkSession, root: str, as_of: dt.date, filters: Filters,
                  cfg: Config, where: str = "") -> None:
    """``check_names``, and refuse a cluster that the date does not have."""
    check_names(filters, cfg, where)
    if filters.clusters:
        table = _gold(spark, root, CUSTOMER_CLUSTERS)
        # one row per cluster at the date
        found = sorted(r["cluster"] for r in (
            table.where(F.col("as_of") == F.lit(as_of)).select("cluster").distinct().collect()
            if table is not None else []))
        unknown = [c for c in filters.clusters if c not in found]
        if unknown:
            raise InputError(f"{where}unknown cluster {', '.join(map(str, unknown))} as of "
                             f"{as_of} (clusters: {', '.join(map(str, found)) or 'none'})")


def select(people: DataFrame, filters: Filters) -> DataFrame:
    """The customers of ``people`` that pass ``filters``."""
    keep: Column = F.lit(True)
    if filters.segments:
        keep = keep & F.col("segment").isin(filters.segments)
    if filters.clusters:
        keep = keep & F.col("cluster").isin(filters.clusters)
    if filters.tiers:
        keep = keep & F.col("value_tier").isin(filters.tiers)
    if filters.min_p_alive is not None:
        keep = keep & (F.col("p_alive") >= filters.min_p_alive)
    return people.where(keep)


def neutralised(df: DataFrame) -> DataFrame:
    """Text cells that a spreadsheet would run as a formula, prefixed with ``'`` (OWASP's
    advice for CSV injection); numbers are left as they are."""
    def safe(name: str) -> Column:
        col = F.col(name)
        risky = F.substring(col, 1, 1).isin(*FORMULA_START)
        return F.when(risky, F.concat(F.lit("'"), col)).otherwise(col).alias(name)

    text = {f.name for f in df.schema.fields if f.dataType.typeName() == "string"}
    return df.select(*[safe(c) if c in text else F.col(c) for c in df.columns])


def write(df: DataFrame, out: str, fmt: str, single_file_max_rows: int) -> tuple[int, str]:
    """Write ``df`` as one CSV (with a header) or parquet file at ``out``, or as a folder of
    parts when it has more than ``single_file_max_rows`` rows or ``out`` is a URI; return the
    rows and what was written."""
    rows = df.count()
    if fmt == "csv":
        df = neutralised(df)
    single = rows <= single_file_max_rows and not lakehouse.is_uri(out)
    target = f"{out}.parts-{uuid.uuid4().hex[:8]}" if single else out
    writer = (df.coalesce(1) if single else df).write.mode("overwrite")
    if fmt == "csv":
        writer.option("header", "true").option("escape", '"').csv(target)
    else:
        writer.parquet(target)
    if not single:
        return rows, f"{out} (folder of parts)"
    part = next(f for f in sorted(os.listdir(target)) if f.startswith("part-"))
    if os.path.isdir(out):  # an earlier, larger export of the same name left a folder of parts
        shutil.rmtree(out)
    os.replace(os.path.join(target, part), out)
    shutil.rmtree(target)
    return rows, out


def configured(cfg: Config, name: str) -> Filters:
    """A named audience's filters, or one line naming the configured ones."""
    specs = cfg["audiences"]
    if name not in specs:
        raise InputError(f"unknown audience {name!r} (configured: "
                         f"{', '.join(specs) or 'none'}; see 'audiences' in the configuration)")
    return Filters.of(specs[name])


def audiences(spark: SparkSession, root: str, cfg: Config, as_of: str | None = None
              ) -> StageSummary:
    """gold/audiences for the configured audiences at ``as_of`` (default: the latest segmented
    date), and their files when ``export.dir`` is set."""
    start = time.time()
    summary = StageSummary("audiences")
    specs = cfg["audiences"]
    if not specs:
        summary.notes.append("no audiences configured")
        return summary
    day = resolve_date(spark, root, as_of)
    step = memo.Step(
        "audiences", str(day), outputs=[AUDIENCES],
        inputs=[("gold", t) for t in (RFM_SEGMENTS, CUSTOMER_CLUSTERS, CLV_PREDICTIONS)],
        settings=dict(as_of=day, audiences=specs, actions=cfg["dashboard"]["actions"],
                      horizon_days=cfg["clv"]["horizon_days"], export=cfg["export"]))
    done = memo.materialise(spark, root, step, lambda _key: _build(
        spark, root, cfg, specs, day, summary))
    if done:
        summary.notes.append(f"as of {day}: same inputs and settings as run {done}; "
                             "nothing written")
    summary.seconds = time.time() - start
    return summary


def _build(spark: SparkSession, root: str, cfg: Config, specs: dict, day: dt.date,
           summary: StageSummary) -> None:
    """Write the audiences' members for ``day`` (and their files when ``export.dir`` is set)."""
    people = customers(spark, root, day, cfg).persist()
    try:
        chosen = {name: Filters.of(spec) for name, spec in specs.items()}
        for name, filters in chosen.items():
            check_filters(spark, root, day, filters, cfg, where=f"audiences.{name}: ")
        members = [select(people, f).select(F.lit(name).alias("audience"), "customer_id",
                                            "as_of") for name, f in chosen.items()]
        table = members[0]
        for more in members[1:]:
            table = table.unionByName(more)
        path = lakehouse.table_path(root, *AUDIENCES)
        lakehouse.replace_where(table, path, f"as_of = DATE'{day.isoformat()}'", "as_of")
        # one row per audience
        sizes = {r["audience"]: r["count"] for r in lakehouse.read(spark, path)
                 .where(F.col("as_of") == F.lit(day)).groupBy("audience").count().collect()}
        summary.rows_in = people.count()
        summary.rows_out["gold/audiences"] = sum(sizes.values())
        for name in chosen:
            summary.notes.append(f"audience {name} as of {day}: {sizes.get(name, 0):,} customers")
        folder = cfg["export"]["dir"]
        if folder:
            fmt = cfg["export"]["format"]
            for name, filters in chosen.items():
                rows, wrote = write(select(people, filters), f"{folder}/{name}-{day}.{fmt}", fmt,
                                    cfg["export"]["single_file_max_rows"])
                summary.notes.append(f"exported {name}: {rows:,} rows to {wrote}")
    finally:
        people.unpersist()


def export(spark: SparkSession, root: str, cfg: Config, out: str, as_of: str | None,
           filters: Filters, fmt: str) -> StageSummary:
    """``custseg export``: one audience's customers, with every column of ``COLUMNS``."""
    start = time.time()
    summary = StageSummary("export")
    day = resolve_date(spark, root, as_of)
    check_filters(spark, root, day, filters, cfg)
    rows, wrote = write(select(customers(spark, root, day, cfg), filters), out, fmt,
                        cfg["export"]["single_file_max_rows"])
    summary.rows_out[out] = rows
    summary.notes.append(f"{rows:,} customers as of {day} to {wrote} ({fmt})")
    summary.seconds = time.time() - start
    return summary
