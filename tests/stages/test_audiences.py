"""Audiences and exports on the notebooks' lakehouse: the files read back equal what pandas
finds in the gold tables, formula-like text is neutralised, bad names are refused."""

from __future__ import annotations

import csv
import shutil

import pandas as pd
import pytest

from custseg.cli import main
from custseg.config import load_config
from custseg.io import lakehouse
from custseg.stages import audiences

SETTINGS = ["spark.shuffle_partitions=2"]
SETS = [a for s in SETTINGS for a in ("--set", s)]


def _gold(spark, root, name):
    return lakehouse.read(spark, lakehouse.table_path(root, "gold", name)).toPandas()


@pytest.fixture(scope="module")
def expected(spark, notebook_run):
    """Every customer at the latest as-of date, joined in pandas from the gold tables."""
    cfg = load_config(overrides=SETTINGS)
    root = notebook_run["root"]
    rfm = _gold(spark, root, "rfm_segments")
    as_of = rfm["as_of"].max()
    people = rfm[rfm["as_of"] == as_of][["customer_id", "country", "segment", "value_tier"]]
    clusters = _gold(spark, root, "customer_clusters")
    value = _gold(spark, root, "clv_predictions")
    value = value[(value["as_of"] == as_of)
                  & (value["horizon_days"] == cfg["clv"]["horizon_days"])]
    people = (people
              .merge(clusters[clusters["as_of"] == as_of][["customer_id", "cluster",
                                                          "cluster_name"]],
                     on="customer_id", how="left")
              .merge(value[["customer_id", "predicted_spend", "predicted_spend_p10",
                            "predicted_spend_p90", "predicted_tier", "p_alive"]],
                     on="customer_id", how="left"))
    people["action"] = people["segment"].map(cfg["dashboard"]["actions"])
    people["as_of"] = str(as_of)
    assert people["p_alive"].notna().all() and people["cluster"].notna().all()
    return {"root": root, "people": people.set_index("customer_id"), "as_of": as_of}


def test_export_equals_the_gold_tables_row_by_row(expected, tmp_path, capsys):
    out = tmp_path / "list.csv"
    assert main(["export", "--lakehouse", expected["root"], "--out", str(out), "--segment",
                 "Hibernating", "--segment", "At Risk", "--min-p-alive", "0.5", *SETS]) == 0
    with open(out, newline="", encoding="utf-8") as fh:
        got = list(csv.DictReader(fh))
    people = expected["people"]
    want = people[people["segment"].isin(["Hibernating", "At Risk"])
                  & (people["p_alive"] >= 0.5)]
    assert len(want) > 0
    assert list(got[0]) == list(audiences.COLUMNS)
    assert sorted(int(r["customer_id"]) for r in got) == sorted(want.index)
    for r in got:
        w = want.loc[int(r["customer_id"])]
        for name in ("country", "segment", "value_tier", "cluster_name", "predicted_tier",
                     "action", "as_of"):
            assert r[name] == str(w[name]), (r["customer_id"], name)
        assert int(r["cluster"]) == w["cluster"]
        for name in ("predicted_spend", "predicted_spend_p10", "predicted_spend_p90",
                     "p_alive"):
            assert float(r[name]) == pytest.approx(w[name], rel=1e-12), name


def test_a_configured_audience_as_parquet(expected, tmp_path):
    out = tmp_path / "win_back.parquet"
    assert main(["export", "--lakehouse", expected["root"], "--out", str(out), "--audience",
                 "win_back", "--format", "parquet", *SETS]) == 0
    got = pd.read_parquet(out)
    people = expected["people"]
    want = people[people["segment"].isin(["At Risk", "Cannot Lose Them"])
                  & (people["p_alive"] >= 0.3)]
    assert sorted(got["customer_id"]) == sorted(want.index)
    assert list(got.columns) == list(audiences.COLUMNS)


def test_the_audiences_stage_writes_the_table_and_files(spark, expected, tmp_path, capsys):
    root = str(tmp_path / "lakehouse")
    shutil.copytree(expected["root"], root)  # the shared lakehouse stays as it was
    folder = tmp_path / "exports"
    assert main(["audiences", "--lakehouse", root, "--set", f"export.dir={folder}",
                 *SETS]) == 0
    said = capsys.readouterr().out
    table = _gold(spark, root, "audiences")
    people = expected["people"]
    for name, spec in load_config()["audiences"].items():
        keep = people["segment"].isin(spec["segments"])
        if spec.get("min_p_alive") is not None:
            keep &= people["p_alive"] >= spec["min_p_alive"]
        members = sorted(table[table["audience"] == name]["customer_id"])
        assert members == sorted(people[keep].index), name
        assert f"audience {name} as of {expected['as_of']}: {len(members):,} customers" in said
        with open(folder / f"{name}-{expected['as_of']}.csv", newline="") as fh:
            assert sorted(int(r["customer_id"]) for r in csv.DictReader(fh)) == members


def test_formula_like_text_is_neutralised_in_csv(spark, tmp_path):
    df = spark.createDataFrame(
        [(1, "=HYPERLINK(\"http://x\")", -5.0), (2, "+cmd", 3.0), (3, "-2+3", 0.0),
         (4, "@SUM(A1)", 1.0), (5, "\tTab", 2.0), (6, "Plain, with a comma", 4.0),
         (7, None, None)], "customer_id int, country string, predicted_spend double")
    out = tmp_path / "safe.csv"
    rows, wrote = audiences.write(df, str(out), "csv", 100)
    assert (rows, wrote) == (7, str(out))
    with open(out, newline="", encoding="utf-8") as fh:
        got = list(csv.reader(fh))
    assert got[0] == ["customer_id", "country", "predicted_spend"]
    assert [r[1] for r in got[1:]] == ["'=HYPERLINK(\"http://x\")", "'+cmd", "'-2+3",
                                       "'@SUM(A1)", "'\tTab", "Plain, with a comma", ""]
    assert got[1][2] == "-5.0"  # numbers stay numbers
    parts = tmp_path / "parts.csv"
    rows, wrote = audiences.write(df, str(parts), "csv", 3)
    assert rows == 7 and wrote.endswith("(folder of parts)") and parts.is_dir()


def test_bad_names_are_one_line_and_exit_2(expected, tmp_path, capsys):
    root = expected["root"]
    out = str(tmp_path / "x.csv")
    cases = [
        (["--segment", "Champs"], "unknown segment 'Champs' (known: Champions, "),
        (["--tier", "Gold"], "unknown tier 'Gold' (known: Low, Mid, High)"),
        (["--audience", "vips"], "unknown audience 'vips' (configured: win_back, reward, "
                                 "nurture; see 'audiences' in the configuration)"),
        (["--cluster", "42"], "unknown cluster 42 as of "),
        (["--as-of", "2001-01-01"], "--as-of 2001-01-01: not segmented (segmented dates: "),
        (["--min-p-alive", "1.5"], "min_p_alive must be between 0 and 1, got 1.5"),
    ]
    for args, message in cases:
        code = main(["export", "--lakehouse", root, "--out", out, *args, *SETS])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, (args, err)
        assert err[0].startswith(f"custseg export: error: {message}"), (args, err)
    assert not (tmp_path / "x.csv").exists()
