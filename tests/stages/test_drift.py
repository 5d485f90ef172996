"""The drift stage on a hand-made lakehouse: migration, PSI and ARI against NumPy and
scikit-learn, thresholds, reruns, and the exit code of --fail-on-drift."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from custseg.cli import main
from custseg.io import lakehouse
from custseg.ml.clusters import adjusted_rand_index
from custseg.stages.segment import replace_as_of
from tests.transforms.test_insights import _numpy_psi

D1, D2 = dt.date(2011, 6, 1), dt.date(2011, 9, 1)
N = 400


def test_ari_against_scikit_learn():
    rng = np.random.default_rng(5)
    for k_a, k_b, noise in ((2, 2, 0.0), (3, 4, 0.3), (5, 5, 1.0)):
        a = rng.integers(0, k_a, 2000)
        b = np.where(rng.random(2000) < noise, rng.integers(0, k_b, 2000), a % k_b)
        cells = {}
        for x, y in zip(a, b, strict=True):
            cells[(int(x), int(y))] = cells.get((int(x), int(y)), 0) + 1
        got = adjusted_rand_index([(x, y, n) for (x, y), n in cells.items()])
        assert got == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)
    assert adjusted_rand_index([(0, 1, 5), (1, 0, 7)]) == pytest.approx(1.0)
    assert adjusted_rand_index([(0, 0, 1)]) is None


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(8)
    m1 = rng.gamma(2.0, 100.0, N).round(2)
    m2 = (m1 * rng.uniform(1.0, 3.0, N)).round(2)  # spend shifts up: PSI breach
    r1 = rng.integers(1, 300, N)
    r2 = r1 + 92                                   # everyone three months older
    f1 = rng.integers(1, 6, N)
    seg1 = np.where(r1 < 100, "Champions", "Hibernating")
    seg2 = np.where(r2 < 100, "Champions", "Hibernating")
    c1 = (m1 > np.median(m1)).astype(int)
    c2 = np.where(np.arange(N) % 10 == 0, 1 - c1, c1)  # 10% of customers switch cluster
    return dict(m1=m1, m2=m2, r1=r1, r2=r2, f1=f1, seg1=seg1, seg2=seg2, c1=c1, c2=c2)


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory, data):
    root = str(tmp_path_factory.mktemp("drift") / "lakehouse")
    d = data
    schema = ("customer_id int, as_of date, segment string, recency_days int, frequency long, "
              "monetary double")
    rows1 = [(i, D1, str(d["seg1"][i]), int(d["r1"][i]), int(d["f1"][i]), float(d["m1"][i]))
             for i in range(N)]
    # customer 0 is gone at D2; customer N is new
    rows2 = [(i, D2, str(d["seg2"][i]), int(d["r2"][i]), int(d["f1"][i]), float(d["m2"][i]))
             for i in range(1, N)] + [(N, D2, "New Customers", 3, 1, 50.0)]
    path = lakehouse.table_path(root, "gold", "rfm_segments")
    replace_as_of(spark.createDataFrame(rows1, schema), path, D1)
    cl = "customer_id int, as_of date, cluster int"
    cpath = lakehouse.table_path(root, "gold", "customer_clusters")
    replace_as_of(spark.createDataFrame([(i, D1, int(d["c1"][i])) for i in range(N)], cl),
                  cpath, D1)
    return {"root": root, "rows2": rows2, "schema": schema, "cl": cl, "path": path,
            "cpath": cpath}


def _sets():
    return ["--set", "spark.shuffle_partitions=2", "--set", "drift.min_cluster_ari=0.9"]


def test_one_date_has_nothing_to_compare(lake, capsys):
    assert main(["drift", "--lakehouse", lake["root"], "--fail-on-drift", *_sets()]) == 0
    assert "nothing to compare yet" in capsys.readouterr().out


@pytest.fixture(scope="module")
def second_date(spark, lake, data):
    d = data
    replace_as_of(spark.createDataFrame(lake["rows2"], lake["schema"]), lake["path"], D2)
    replace_as_of(spark.createDataFrame([(i, D2, int(d["c2"][i])) for i in range(1, N)],
                                        lake["cl"]), lake["cpath"], D2)
    return lake


def _table(spark, root, name):
    return lakehouse.read(spark, lakehouse.table_path(root, "gold", name))


def test_drift_report_and_migration(spark, second_date, data, capsys):
    root = second_date["root"]
    assert main(["drift", "--lakehouse", root, *_sets()]) == 0
    out = capsys.readouterr().out
    report = {r["check"]: r for r in _table(spark, root, "drift_report").collect()}
    d = data
    monetary = report["psi monetary"]
    m2 = np.append(d["m2"][1:], 50.0)
    assert monetary["value"] == pytest.approx(_numpy_psi(d["m1"], m2, 10), rel=1e-9)
    assert monetary["breach"] and monetary["kind"] == "rfm"
    assert report["psi frequency"]["breach"] is False
    # ARI on the 399 customers at both dates, against scikit-learn
    ari = adjusted_rand_score(d["c1"][1:], d["c2"][1:])
    assert report["cluster ari"]["value"] == pytest.approx(ari, abs=1e-12)
    assert report["cluster ari"]["breach"] == (ari < 0.9)
    share = report["share Champions"]
    before = (d["seg1"] == "Champions").mean()
    after = (d["seg2"][1:] == "Champions").sum() / N
    assert share["value"] == pytest.approx(after - before)
    assert {r["from_as_of"] for r in report.values()} == {D1}
    moves = {(r["from_segment"], r["to_segment"]): r["customers"]
             for r in _table(spark, root, "segment_migration").collect()}
    want = {}
    for i in range(1, N):
        key = (str(d["seg1"][i]), str(d["seg2"][i]))
        want[key] = want.get(key, 0) + 1
    want[(str(d["seg1"][0]), "(gone)")] = want.get((str(d["seg1"][0]), "(gone)"), 0) + 1
    want[("(new)", "New Customers")] = 1
    assert moves == want
    assert "ALERT DRIFT psi monetary" in out


def test_rerun_replaces_and_fail_on_drift_exits_3(spark, second_date, capsys):
    root = second_date["root"]
    assert main(["drift", "--lakehouse", root, "--fail-on-drift", *_sets()]) == 3
    err = capsys.readouterr().err
    assert err.startswith("custseg drift: drift beyond thresholds: ")
    assert "psi monetary = " in err and "cluster ari = " in err
    report = _table(spark, root, "drift_report")
    assert report.count() == report.select("check").distinct().count()
    migration = _table(spark, root, "segment_migration")
    assert migration.count() == migration.select("from_segment", "to_segment").distinct().count()
    # thresholds from configuration: nothing breaches with loose ones
    loose = ["--set", "drift.psi_threshold=100", "--set", "drift.share_change_threshold=1",
             "--set", "drift.min_cluster_ari=-1"]
    assert main(["drift", "--lakehouse", root, "--fail-on-drift", *loose]) == 0


def test_unknown_as_of_is_a_clear_error(second_date, capsys):
    assert main(["drift", "--lakehouse", second_date["root"], "--as-of", "2011-07-01"]) == 2
    assert "no segments as of 2011-07-01" in capsys.readouterr().err
