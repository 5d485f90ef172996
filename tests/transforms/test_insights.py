"""Business-answer tables, drift measures and dashboard KPIs on tiny fixtures worked out by hand
(and PSI against a NumPy computation)."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from custseg.dashboard.collect import kpis
from custseg.ml.drift import psi, segment_migration, segment_shares
from custseg.transforms.reports import (
    country_activity,
    invoice_totals,
    purchase_nature,
    report_country_customers,
    report_transactions,
    report_year_invoices,
)

FACT = "invoice_no string, customer_id int, country string, quantity int, total_price double, " \
       "invoice_date timestamp"


def t(month, day=1):
    return dt.datetime(2011, month, day, 12, 0)


@pytest.fixture(scope="module")
def fact(spark):
    return spark.createDataFrame([
        # invoice A: 60 + 30 = 90 units -> personal (below 100)
        ("A", 1, "UK", 60, 60.0, t(1)), ("A", 1, "UK", 30, 40.0, t(1)),
        # B: exactly 100 -> bulk
        ("B", 1, "UK", 100, 200.0, t(5)),
        # C: 999 -> bulk; D: 1000 -> reseller
        ("C", 2, "France", 999, 500.0, t(8)),
        ("D", 3, "France", 1000, 1500.0, t(11)),
        # E: anonymous, 5 units -> personal, counts in orders and revenue, not customers
        ("E", None, "UK", 5, 10.0, t(12)),
        # F: customer 2 again, personal, last invoice of the data (period end 2011-12-10 12:00)
        ("F", 2, "France", 10, 50.0, t(12, 10)),
    ], FACT)


def test_purchase_nature_classes_by_units_per_order(fact):
    rows = {r["purchase_class"]: r.asDict()
            for r in purchase_nature(invoice_totals(fact), 100, 1000).collect()}
    assert list(rows) and set(rows) == {"personal", "bulk", "reseller"}
    p, b, r = rows["personal"], rows["bulk"], rows["reseller"]
    # personal: A (100.0), E (10.0), F (50.0); customers 1 and 2 (E anonymous)
    assert (p["orders"], p["customers"], p["items"]) == (3, 2, 105)
    assert p["revenue"] == pytest.approx(160.0)
    # bulk: B (200) by customer 1, C (500) by customer 2
    assert (b["orders"], b["customers"], b["revenue"]) == (2, 2, pytest.approx(700.0))
    assert (r["orders"], r["customers"], r["revenue"]) == (1, 1, pytest.approx(1500.0))
    assert p["share_orders"] == pytest.approx(3 / 6)
    assert r["share_revenue"] == pytest.approx(1500 / 2360)
    assert (p["min_items"], p["max_items"], b["min_items"], b["max_items"],
            r["min_items"], r["max_items"]) == (0, 99, 100, 999, 1000, None)
    assert b["average_order_value"] == pytest.approx(350.0)


def test_purchase_nature_keeps_empty_classes(spark, fact):
    rows = {r["purchase_class"]: r for r in purchase_nature(
        invoice_totals(fact.where("invoice_no = 'A'")), 100, 1000).collect()}
    assert rows["reseller"]["orders"] == 0 and rows["reseller"]["revenue"] == 0.0
    assert rows["personal"]["share_revenue"] == pytest.approx(1.0)


def test_reports_from_invoice_totals_count_an_invoice_across_midnight_by_its_lines(spark, fact):
    late = [("G", 4, "UK", 2, 7.0, dt.datetime(2011, 1, 31, 23, 59)),
            ("G", 4, "UK", 3, 8.0, dt.datetime(2011, 2, 1, 0, 1))]
    totals = invoice_totals(fact.unionByName(spark.createDataFrame(late, FACT)))
    months = {(r["year"], r["month"]): (r["invoices"], r["revenue"])
              for r in report_year_invoices(totals).collect()}
    assert months == {(2011, 1): (2, pytest.approx(107.0)), (2011, 2): (1, pytest.approx(8.0)),
                      (2011, 5): (1, 200.0), (2011, 8): (1, 500.0), (2011, 11): (1, 1500.0),
                      (2011, 12): (2, pytest.approx(60.0))}
    g = report_transactions(totals).where("invoice_no = 'G'").first()
    assert (g["invoice_date"], g["customer_id"], g["lines"], g["items"]) == (
        dt.datetime(2011, 1, 31, 23, 59), 4, 2, 5)
    assert g["sales"] == pytest.approx(15.0)
    countries = {r["country"]: (r["customers"], r["invoices"], r["revenue"])
                 for r in report_country_customers(totals).collect()}
    assert countries == {"UK": (2, 4, pytest.approx(325.0)),
                         "France": (2, 3, pytest.approx(2050.0))}

def test_country_activity_growth_windows(fact):
    # period end 2011-12-10 12:00; 3 months: recent after 2011-09-10 12:00,
    # previous after 2011-06-10 12:00
    rows = {r["country"]: r.asDict()
            for r in country_activity(invoice_totals(fact), 3).collect()}
    uk, fr = rows["UK"], rows["France"]
    assert (uk["customers"], uk["orders"]) == (1, 3)
    assert uk["revenue"] == pytest.approx(310.0)
    assert uk["revenue_per_customer"] == pytest.approx(300.0)  # the anonymous 10 left out
    assert uk["revenue_recent"] == pytest.approx(10.0)
    assert uk["revenue_previous"] == 0.0 and uk["revenue_growth"] is None
    assert (uk["customers_recent"], uk["customers_previous"]) == (0, 0)
    # France: C (Aug 1, previous), D (Nov 1, recent) and F (Dec 10, recent)
    assert (fr["customers"], fr["orders"]) == (2, 3)
    assert fr["revenue_recent"] == pytest.approx(1550.0)
    assert fr["revenue_previous"] == pytest.approx(500.0)
    assert fr["revenue_growth"] == pytest.approx(1550 / 500 - 1)
    assert (fr["customers_recent"], fr["customers_previous"]) == (2, 1)
    assert fr["customer_growth"] == pytest.approx(1.0)
    assert fr["average_order_value"] == pytest.approx(2050 / 3)


RFM = "customer_id int, as_of date, segment string, monetary double, recency_days int"
D1, D2 = dt.date(2011, 6, 1), dt.date(2011, 9, 1)


@pytest.fixture(scope="module")
def rfm(spark):
    return spark.createDataFrame([
        (1, D1, "Champions", 100.0, 5), (1, D2, "At Risk", 150.0, 60),
        (2, D1, "Champions", 50.0, 3), (2, D2, "Champions", 90.0, 2),
        (3, D1, "Hibernating", 10.0, 200), (3, D2, "Champions", 40.0, 1),
        (4, D1, "At Risk", 20.0, 90), (4, D2, "At Risk", 20.0, 182),
        (5, D2, "New Customers", 30.0, 4),
    ], RFM)


def test_segment_migration(rfm):
    moves = {(r["from_segment"], r["to_segment"]): (r["customers"], r["revenue"])
             for r in segment_migration(rfm, D1, D2).collect()}
    assert moves == {
        ("Champions", "At Risk"): (1, pytest.approx(50.0)),
        ("Champions", "Champions"): (1, pytest.approx(40.0)),
        ("Hibernating", "Champions"): (1, pytest.approx(30.0)),
        ("At Risk", "At Risk"): (1, pytest.approx(0.0)),
        ("(new)", "New Customers"): (1, pytest.approx(30.0)),
    }


def test_segment_shares(rfm):
    s = {r["segment"]: r for r in segment_shares(rfm, D1, D2).collect()}
    assert s["Champions"]["share_before"] == pytest.approx(2 / 4)
    assert s["Champions"]["share_after"] == pytest.approx(2 / 5)
    assert s["Champions"]["share_change"] == pytest.approx(-0.1)
    assert s["Hibernating"]["share_after"] == 0.0
    assert s["New Customers"]["share_change"] == pytest.approx(0.2)


def _numpy_psi(expected, actual, bins):
    # quantile edges of the expected sample (inverted CDF, as percentile_approx), merged
    edges = sorted(set(np.quantile(expected, [i / bins for i in range(1, bins)],
                                   method="inverted_cdf")))
    splits = [-np.inf, *edges, np.inf]
    # Bucketizer bins are [a, b): searchsorted on the right edges
    p = np.histogram(expected, bins=splits)[0] / len(expected)
    q = np.histogram(actual, bins=splits)[0] / len(actual)
    p, q = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
    return float(np.sum((q - p) * np.log(q / p)))


def test_psi_against_numpy(spark):
    rng = np.random.default_rng(3)
    a = rng.gamma(2.0, 50.0, 4000).round(2)
    b = rng.gamma(2.6, 55.0, 3000).round(2)
    da = spark.createDataFrame([(float(x),) for x in a], "m double")
    db = spark.createDataFrame([(float(x),) for x in b], "m double")
    got = psi(da, db, "m", 10)
    assert got == pytest.approx(_numpy_psi(a, b, 10), rel=1e-9)
    assert got > 0.1
    assert psi(da, da, "m", 10) == pytest.approx(0.0, abs=1e-12)


def test_psi_of_a_tied_feature(spark):
    # frequency-like: mostly 1s; tied cut points merge into fewer bins
    a = [1.0] * 70 + [2.0] * 20 + [5.0] * 10
    b = [1.0] * 40 + [2.0] * 40 + [5.0] * 20
    da = spark.createDataFrame([(x,) for x in a], "f double")
    db = spark.createDataFrame([(x,) for x in b], "f double")
    # bins: (-inf,1) [1,2) [2,5) [5,inf): p = 0, .7, .2, .1 ; q = 0, .4, .4, .2
    want = sum((q - p) * math.log(q / p) for p, q in ((.7, .4), (.2, .4), (.1, .2)))
    assert psi(da, db, "f", 10) == pytest.approx(want, rel=1e-9)


def test_kpis_by_hand(spark):
    transactions = spark.createDataFrame(
        [("I1", 100.0), ("I2", 50.0), ("I3", 25.0), ("I4", 25.0)], "invoice_no string, sales double")
    # ten customers; the top 20% are the two above the 80th percentile (80 and 100)
    customers = spark.createDataFrame([(i, float(v)) for i, v in enumerate(
        [1, 2, 3, 4, 5, 6, 7, 8, 80, 100])], "customer_id int, total_purchase double")
    k = kpis(transactions, customers)
    assert (k.customers, k.orders) == (10, 4)
    assert k.revenue == pytest.approx(200.0)
    assert k.average_order_value == pytest.approx(50.0)
    assert k.top20_share == pytest.approx(180 / 216)
