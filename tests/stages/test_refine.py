"""Every refine rule on hand-made files, with the expected routing worked out by hand."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from custseg.io import lakehouse
from custseg.stages.ingest import ingest
from custseg.stages.refine import ensure_fact_table, refine
from custseg.transforms import silver
from tests.conftest import delta_file_stats, write_csv

BATCH1 = [
    "536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850,United Kingdom",
    "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850,United Kingdom",
    "536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850,United Kingdom",
    "C536379,D,Discount,-1,2010-12-01 09:41:00,27.50,14527,United Kingdom",
    "536380,22961,JAM MAKING SET,0,2010-12-01 09:45:00,1.45,14527,United Kingdom",
    "536381,22139,RETROSPOT TEA SET,2,2010-12-01 09:45:00,0,14527,United Kingdom",
    "536382,22139,RETROSPOT TEA SET,-5,2010-12-01 09:45:00,4.25,,United Kingdom",
    "536383,22386,JUMBO BAG,3,not a date,1.95,13047,United Kingdom",
    "536384,22386,JUMBO BAG,three,2010-12-02 10:00:00,1.95,13047,United Kingdom",
    "536385,22386,JUMBO BAG,3,2010-12-02 10:00:00,abc,13047,United Kingdom",
    ",22386,JUMBO BAG,3,2010-12-02 10:00:00,1.95,13047,United Kingdom",
    "536386,22386,JUMBO BAG,3,,1.95,13047,United Kingdom",
    "536387,22386,JUMBO BAG,4,12/2/2010 11:30,1.95,, United Kingdom",
    "536388,21730,GLASS STAR,1,2010-12-03 12:00:00,4.25,1235x,France",
    "C536389,22386,JUMBO BAG,-2,2010-12-03 13:00:00,1.95,13047,United Kingdom",
    "536390,POST,POSTAGE,1,2010-12-03 14:00:00,18.0,12583,France",
    "536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850,United Kingdom",
    "536383,22386,JUMBO BAG,3,not a date,1.95,13047,United Kingdom",
    "536391,22386,JUMBO BAG,2.0,2010-12-04 10:00:00,1.95,13047.0,United Kingdom",
]
BATCH2 = [
    "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850,United Kingdom",
    "536400,85123A,WHITE HANGING HEART,12,2010-12-05 10:00:00,2.55,17850,United Kingdom",
    "536401,71053,WHITE METAL LANTERN,1,2010-12-06 10:00:00,3.39,12583,France",
]
EXPECTED_ROUTES_1 = {
    1: "fact", 2: "fact", 13: "fact", 16: "fact", 19: "fact",
    4: "cancellation", 15: "cancellation",
    3: "duplicate", 17: "duplicate", 18: "duplicate",
    5: "not_a_sale", 6: "not_a_sale", 7: "not_a_sale",
    8: "unparseable_invoice_date", 9: "unparseable_quantity", 10: "unparseable_unit_price",
    11: "missing_invoice_no", 12: "missing_invoice_date", 14: "unparseable_customer_id",
}


@pytest.fixture(scope="module")
def refined(spark, cfg, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("lh") / "lakehouse")
    files = tmp_path_factory.mktemp("in")
    f1 = write_csv(files / "batch1.csv", BATCH1)
    f2 = write_csv(files / "batch2.csv", BATCH2)
    ingest(spark, f1, root, cfg)
    first = refine(spark, root, cfg)
    versions_after_1 = {t: lakehouse.version(spark, lakehouse.table_path(root, "silver", t))
                        for t in ("fct_invoices", "cancellations", "quarantine")}
    fact_after_1 = [r.asDict() for r in
                    lakehouse.read(spark, lakehouse.table_path(root, "silver", "fct_invoices"))
                    .orderBy("source_row").collect()]
    again = refine(spark, root, cfg)
    versions_after_rerun = {t: lakehouse.version(spark, lakehouse.table_path(root, "silver", t))
                            for t in ("fct_invoices", "cancellations", "quarantine")}
    ingest(spark, f2, root, cfg)
    second = refine(spark, root, cfg)
    return dict(root=root, first=first, again=again, second=second,
                versions_after_1=versions_after_1, versions_after_rerun=versions_after_rerun,
                fact_after_1=fact_after_1, f1=f1, f2=f2)


def _table(spark, root, name):
    return lakehouse.read(spark, lakehouse.table_path(root, "silver", name))


def _routes(spark, root, source_file_suffix):
    routes = {}
    for r in _table(spark, root, "fct_invoices").collect():
        if r["source_file"].endswith(source_file_suffix):
            routes[r["source_row"]] = "fact"
    for r in _table(spark, root, "cancellations").collect():
        if r["source_file"].endswith(source_file_suffix):
            routes[r["source_row"]] = "cancellation"
    for r in _table(spark, root, "quarantine").collect():
        if r["source_file"].endswith(source_file_suffix):
            routes[r["source_row"]] = r["reason"]
    return routes


def test_every_row_routed_as_worked_out_by_hand(spark, refined):
    assert _routes(spark, refined["root"], "batch1.csv") == EXPECTED_ROUTES_1


def test_summary_reconciles(refined):
    s = refined["first"]
    assert s.rows_in == 19
    assert s.rows_out["silver/fct_invoices"] == 5
    assert s.rows_out["silver/cancellations"] == 2
    assert s.rows_out["silver/quarantine"] == 12
    assert s.quarantined == {"duplicate": 3, "not_a_sale": 3, "unparseable_invoice_date": 1,
                             "unparseable_quantity": 1, "unparseable_unit_price": 1,
                             "missing_invoice_no": 1, "missing_invoice_date": 1,
                             "unparseable_customer_id": 1}


def test_fact_values(refined):
    rows = {r["source_row"]: r for r in refined["fact_after_1"]}
    assert sorted(rows) == [1, 2, 13, 16, 19]
    assert rows[1]["total_price"] == pytest.approx(15.30)
    assert rows[2]["total_price"] == pytest.approx(20.34)
    assert sum(r["total_price"] for r in rows.values()) == pytest.approx(65.34)
    anon = rows[13]
    assert anon["customer_id"] is None
    assert anon["country"] == "United Kingdom"
    assert anon["invoice_date"] == dt.datetime(2010, 12, 2, 11, 30)
    assert anon["datetime_key"] == 201012021130
    assert (rows[19]["quantity"], rows[19]["customer_id"]) == (2, 13047)
    assert isinstance(rows[1]["customer_id"], int)


def test_cancellations_keep_customer_and_amount(spark, refined):
    rows = {r["invoice_no"]: r for r in _table(spark, refined["root"], "cancellations").collect()}
    assert set(rows) == {"C536379", "C536389"}
    assert rows["C536379"]["customer_id"] == 14527
    assert rows["C536379"]["amount"] == pytest.approx(-27.5)
    assert rows["C536389"]["amount"] == pytest.approx(-3.9)


def test_quarantine_keeps_the_source_text(spark, refined):
    q = _table(spark, refined["root"], "quarantine")
    row = q.where(F.col("reason") == "unparseable_quantity").first()
    assert (row["quantity"], row["source_row"]) == ("three", 9)


def test_rerun_changes_nothing(refined):
    assert refined["versions_after_rerun"] == refined["versions_after_1"]
    assert refined["again"].rows_in == 0
    assert any("unchanged" in n for n in refined["again"].notes)


def test_new_batch_adds_only_its_rows_and_dedups_across_files(spark, refined):
    s = refined["second"]
    assert s.rows_in == 3
    assert (s.rows_out["silver/fct_invoices"], s.quarantined) == (2, {"duplicate": 1})
    assert _table(spark, refined["root"], "fct_invoices").count() == 7
    assert _table(spark, refined["root"], "quarantine").count() == 13
    assert _routes(spark, refined["root"], "batch2.csv") == {1: "duplicate", 2: "fact", 3: "fact"}


def test_refine_log_reconciles_each_batch(spark, refined):
    log = {r["bronze_rows"]: r for r in _table(spark, refined["root"], "refine_log").collect()}
    assert set(log) == {19, 3}
    for n, r in log.items():
        assert n == r["fact_rows"] + r["cancellation_rows"] + r["quarantine_rows"]


def test_dim_customer(spark, refined):
    rows = {r["customer_id"]: r for r in _table(spark, refined["root"], "dim_customer").collect()}
    assert set(rows) == {17850, 12583, 13047}
    assert rows[17850]["country"] == "United Kingdom"
    assert rows[17850]["first_purchase"] == dt.datetime(2010, 12, 1, 8, 26)
    assert rows[17850]["last_purchase"] == dt.datetime(2010, 12, 5, 10, 0)
    assert rows[12583]["country"] == "France"
    assert rows[13047]["first_purchase"] == rows[13047]["last_purchase"]


def test_dim_product(spark, refined):
    rows = {r["stock_code"]: r for r in _table(spark, refined["root"], "dim_product").collect()}
    assert set(rows) == {"85123A", "71053", "22386", "POST"}
    assert rows["POST"]["is_non_product"] is True
    assert rows["22386"]["is_non_product"] is False
    assert rows["22386"]["description"] == "JUMBO BAG"


def test_dim_datetime(spark, refined):
    rows = {r["datetime_key"]: r for r in _table(spark, refined["root"], "dim_datetime").collect()}
    assert set(rows) == {201012010826, 201012021130, 201012031400, 201012041000,
                         201012051000, 201012061000}
    wed = rows[201012010826]
    assert (wed["year"], wed["quarter"], wed["month"], wed["day_of_week"], wed["day_name"],
            wed["week_of_year"], wed["hour"]) == (2010, 4, 12, 3, "Wednesday", 48, 8)
    assert wed["date"] == dt.date(2010, 12, 1)


def test_fact_constraints_reject_bad_rows(spark, refined):
    path = lakehouse.table_path(refined["root"], "silver", "fct_invoices")
    good = lakehouse.read(spark, path).limit(1)
    with pytest.raises(Exception, match="(?i)check constraint|quantity_positive"):
        good.withColumn("quantity", F.lit(0)).write.format("delta").mode("append").save(path)
    with pytest.raises(Exception, match="(?i)null|NOT NULL"):
        (good.withColumn("invoice_no", F.lit(None).cast("string"))
         .write.format("delta").mode("append").save(path))
    assert lakehouse.read(spark, path).count() == 7


def test_the_fact_table_equals_one_given_its_constraints_by_alter_table(spark, tmp_path):
    """Constraints given at creation make the table that ``ADD CONSTRAINT`` makes."""
    from custseg.stages.refine import FACT_STATS_COLUMNS

    made = str(tmp_path / "made")
    ensure_fact_table(spark, made)
    altered = str(tmp_path / "altered")
    columns = ", ".join(f"{f.name} {f.dataType.simpleString()}"
                        f"{'' if f.nullable else ' NOT NULL'}" for f in silver.FACT_SCHEMA.fields)
    spark.sql(f"CREATE TABLE delta.`{altered}` ({columns}) USING delta TBLPROPERTIES "
              f"('delta.dataSkippingStatsColumns' = '{FACT_STATS_COLUMNS}')")
    for name, check in (("quantity_positive", "quantity > 0"),
                        ("unit_price_positive", "unit_price > 0")):
        spark.sql(f"ALTER TABLE delta.`{altered}` ADD CONSTRAINT {name} CHECK ({check})")

    def detail(path):
        d = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()
        return (d["properties"], d["minReaderVersion"], d["minWriterVersion"],
                sorted(d["tableFeatures"]), lakehouse.read(spark, path).schema)

    assert detail(made) == detail(altered)
    assert lakehouse.version(spark, made) == 0  # one commit


def test_time_travel(spark, refined):
    from delta.tables import DeltaTable

    path = lakehouse.table_path(refined["root"], "silver", "fct_invoices")
    writes = [r["version"] for r in DeltaTable.forPath(spark, path).history()
              .where("operation = 'WRITE'").orderBy("version").collect()]
    assert len(writes) == 2
    counts = [spark.read.format("delta").option("versionAsOf", v).load(path).count()
              for v in writes]
    assert counts == [5, 7]


@pytest.mark.parametrize("broadcast", [True, False])
def test_copies_found_through_the_hash_are_those_a_row_by_row_scan_finds(
        spark, monkeypatch, broadcast):
    if not broadcast:
        monkeypatch.setattr(silver, "BROADCAST_ROWS_MAX", -1)
    rng = random.Random(5)
    rows = [(f"h{rng.randrange(40)}", f"file{f}", r) for f in (2, 1) for r in range(1, 151)]
    earlier = ["h3", "h7"]
    expected, seen = set(), set(earlier)
    for h, f, r in sorted(rows, key=lambda x: (x[1], x[2])):
        if h in seen:
            expected.add((f, r))
        seen.add(h)
    batch = spark.createDataFrame(rows, "row_hash string, source_file string, source_row long")
    copies, n = silver.duplicate_copies(
        batch, spark.createDataFrame([(h,) for h in earlier], "row_hash string"))
    try:
        found = {(r["source_file"], r["source_row"]) for r in copies.collect()}
    finally:
        copies.unpersist()
    assert (found, n) == (expected, len(expected))
    assert len(expected) > 100


def test_a_fact_written_with_row_hash_takes_rows_without_it(spark, tmp_path):
    from delta.tables import DeltaTable

    path = str(tmp_path / "fct_invoices")
    legacy = T.StructType(silver.FACT_SCHEMA.fields
                          + [T.StructField("row_hash", T.StringType(), False)])
    DeltaTable.createIfNotExists(spark).location(path).addColumns(legacy).execute()
    ensure_fact_table(spark, path)
    row = spark.createDataFrame(
        [("1", "A", None, 1, 2.0, 2.0, dt.datetime(2011, 1, 1), 201101010000, 7, "UK",
          "b", "f", 1)],
        "invoice_no string, stock_code string, description string, quantity int, "
        "unit_price double, total_price double, invoice_date timestamp, datetime_key long, "
        "customer_id int, country string, batch_id string, source_file string, source_row long")
    lakehouse.append_once(row, path, "legacy-test")
    stored = lakehouse.read(spark, path).collect()
    assert [(r["invoice_no"], r["row_hash"]) for r in stored] == [("1", None)]


@pytest.fixture(scope="module")
def reported(spark, refined):
    from custseg.stages.report import report

    first = report(spark, refined["root"])
    again = report(spark, refined["root"])
    return dict(first=first, again=again, root=refined["root"])


def _gold(spark, root, name):
    return lakehouse.read(spark, lakehouse.table_path(root, "gold", name))


def test_report_customers(spark, reported):
    rows = {r["customer_id"]: r for r in _gold(spark, reported["root"], "report_customers")
            .collect()}
    assert set(rows) == {17850, 12583, 13047}
    c = rows[17850]
    assert (c["orders"], c["items"], c["country"]) == (2, 24, "United Kingdom")
    assert c["total_purchase"] == pytest.approx(15.30 + 20.34 + 30.60)
    assert rows[12583]["total_purchase"] == pytest.approx(18.0 + 3.39)


def test_report_country_and_month(spark, reported):
    root = reported["root"]
    countries = {r["country"]: r for r in _gold(spark, root, "report_country_customers").collect()}
    uk = countries["United Kingdom"]
    assert (uk["customers"], uk["invoices"]) == (2, 4)
    assert uk["revenue"] == pytest.approx(15.30 + 20.34 + 7.80 + 3.90 + 30.60)
    fr = countries["France"]
    assert (fr["customers"], fr["invoices"]) == (1, 2)
    months = _gold(spark, root, "report_year_invoices").collect()
    assert [(m["year"], m["month"], m["invoices"]) for m in months] == [(2010, 12, 6)]
    assert months[0]["revenue"] == pytest.approx(65.34 + 30.60 + 3.39)


def test_report_transactions_and_products(spark, reported):
    root = reported["root"]
    tx = {r["invoice_no"]: r for r in _gold(spark, root, "report_transactions").collect()}
    assert (tx["536365"]["lines"], tx["536365"]["items"]) == (2, 12)
    assert tx["536365"]["sales"] == pytest.approx(35.64)
    assert tx["536387"]["customer_id"] is None
    products = {r["stock_code"]: r for r in _gold(spark, root, "report_product_invoices").collect()}
    assert (products["22386"]["invoices"], products["22386"]["quantity"]) == (2, 6)
    sales = _gold(spark, root, "report_sales")
    assert sales.count() == 7
    row = sales.where(F.col("stock_code") == "POST").first()
    assert (row["product"], row["is_non_product"], row["day_of_week"]) == ("POSTAGE", True, 5)


def test_report_rerun_leaves_gold_unchanged(reported):
    assert set(reported["first"].rows_out) == {
        "gold/report_customers", "gold/report_sales", "gold/report_transactions",
        "gold/report_country_customers", "gold/report_product_invoices",
        "gold/report_year_invoices", "gold/purchase_nature", "gold/country_activity"}
    assert reported["first"].rows_out["gold/report_sales"] == 7  # the fact lines, by hand
    assert any("unchanged" in n for n in reported["again"].notes)
    assert reported["again"].rows_out == {}  # nothing rebuilt, nothing written


def test_report_rebuilds_only_what_a_setting_changes(spark, reported):
    from delta.tables import DeltaTable

    from custseg.config import load_config
    from custseg.stages.report import report

    root = reported["root"]

    def version(name):
        path = lakehouse.table_path(root, "gold", name)
        return DeltaTable.forPath(spark, path).history(1).first()["version"]

    before = {n: version(n) for n in ("purchase_nature", "country_activity", "report_sales")}
    cfg = load_config(overrides=["report.purchase_nature.bulk_min_items=5"])
    report(spark, root, cfg)
    after = {n: version(n) for n in before}
    assert after["purchase_nature"] == before["purchase_nature"] + 1
    assert after["country_activity"] == before["country_activity"]
    assert after["report_sales"] == before["report_sales"]
    classes = {r["purchase_class"]: r["min_items"] for r in _gold(spark, root, "purchase_nature")
               .collect()}
    assert classes == {"personal": 0, "bulk": 5, "reseller": 1000}


def test_bronze_keeps_row_counts_and_the_fact_min_max_only_on_its_filter_columns(
        spark, refined):
    bronze = lakehouse.table_path(refined["root"], "bronze", "raw_invoices")
    fact = lakehouse.table_path(refined["root"], "silver", "fct_invoices")
    bronze_stats, fact_stats = delta_file_stats(bronze), delta_file_stats(fact)

    def scanned(path):  # a sum, not count(): Delta may answer count() from these very stats
        return lakehouse.read(spark, path).agg(F.sum(F.lit(1))).first()[0]

    assert sum(s["numRecords"] for s in bronze_stats) == scanned(bronze)
    assert all(not s.get("minValues") for s in bronze_stats)
    assert sum(s["numRecords"] for s in fact_stats) == scanned(fact)
    assert {k for s in fact_stats for k in s["minValues"]} == {"invoice_date", "customer_id"}
    assert spark.conf.get(lakehouse.STATS_DEFAULT, None) is None


# Implausible lines: quarantined with a reason, so they move neither the as-of date nor a score.
PLAUSIBLE = [
    "600001,85123A,A,6,2011-01-10 10:00:00,2.00,20001,United Kingdom",
    "600002,85123A,A,2,2011-02-10 10:00:00,3.00,20002,France",
    "600010,85123A,A,1000000,2011-01-13 10:00:00,0.01,20001,United Kingdom",
    "C600011,85123A,A,-1,2011-01-20 10:00:00,2.00,20001,United Kingdom",
]


def _implausible_rows():
    soon = (dt.datetime.now() + dt.timedelta(days=2)).strftime("%Y-%m-%d %H:%M:%S")
    return {
        5: ("600003,85123A,A,1,2099-01-01 10:00:00,2.00,20001,United Kingdom",
            "future_invoice_date"),
        6: ("C600004,85123A,A,-1,2099-01-01 10:00:00,2.00,20002,France", "future_invoice_date"),
        7: (f"600009,85123A,A,1,{soon},2.00,20002,France", "future_invoice_date"),
        8: ("600005,85123A,A,1,1999-12-31 10:00:00,2.00,20001,United Kingdom",
            "too_early_invoice_date"),
        9: ("600006,85123A,A,1000001,2011-01-11 10:00:00,2.00,20001,United Kingdom",
            "implausible_quantity"),
        10: ("C600008,85123A,A,-2000000,2011-01-12 10:00:00,2.00,20002,France",
             "implausible_quantity"),
        11: ("600007,85123A,A,1,2011-01-12 10:00:00,1000000.01,20002,France",
             "implausible_unit_price"),
    }


def test_implausible_lines_are_quarantined_and_change_no_date_or_score(spark, tmp_path):
    from custseg.config import load_config
    from custseg.ml.rfm import customer_features, default_as_of
    from tests.conftest import TEST_SETTINGS

    cfg = load_config(overrides=[*TEST_SETTINGS, "refine.earliest_date=2000-01-01"])
    bad = _implausible_rows()
    root = str(tmp_path / "lakehouse")
    ingest(spark, write_csv(tmp_path / "hostile.csv", PLAUSIBLE + [r for r, _ in bad.values()]),
           root, cfg)
    summary = refine(spark, root, cfg)
    assert _routes(spark, root, "hostile.csv") == {
        1: "fact", 2: "fact", 3: "fact", 4: "cancellation",
        **{row: reason for row, (_, reason) in bad.items()}}
    assert summary.quarantined == {"future_invoice_date": 3, "too_early_invoice_date": 1,
                                   "implausible_quantity": 2, "implausible_unit_price": 1}
    assert summary.rows_in == 11 == 3 + 1 + 7
    # by hand from the four plausible lines: the 2099 lines leave the as-of date alone, and the
    # quarantined 2,000,000-unit cancellation leaves 20002's return rate at 0
    fact = _table(spark, root, "fct_invoices")
    as_of = default_as_of(fact)
    assert as_of == dt.date(2011, 2, 11)
    got = {r["customer_id"]: (r["recency_days"], r["frequency"], r["monetary"],
                              r["tenure_days"], r["return_rate"])
           for r in customer_features(fact, _table(spark, root, "cancellations"), as_of,
                                      [90]).collect()}
    assert got == {20001: (29, 2, pytest.approx(10012.0), 32, pytest.approx(2 / 10012)),
                   20002: (1, 1, pytest.approx(6.0), 1, 0.0)}
