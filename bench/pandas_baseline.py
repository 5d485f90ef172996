"""The single-process approach custseg replaces: pandas and scikit-learn on one machine.

    python bench/pandas_baseline.py INPUT.parquet|INPUT.xlsx

Cleans the lines, builds RFM and scores, sweeps KMeans k = 2..10 with the silhouette, and fits a
gradient-boosted spend model on the pre/post split, as the seed notebooks do. Prints one JSON
line per finished step (seconds, peak resident memory); ``scale_bench.py`` runs it under a time
and memory limit and reports how far it got.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler


def _done(step: str, started: float, **extra: object) -> None:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"step": step, "seconds": round(time.time() - started, 2),
                      "peak_mb": round(peak_mb), **extra}), flush=True)


def main(path: str) -> None:
    """Run each step in turn and report it."""
    t = time.time()
    df = (pd.read_excel(path, engine="calamine") if path.endswith(".xlsx")
          else pd.read_parquet(path))
    _done("read", t, rows=len(df))

    t = time.time()
    df = df.dropna(subset=["CustomerID", "InvoiceNo", "InvoiceDate"])
    df = df[~df["InvoiceNo"].astype(str).str.startswith("C")]
    df = df[(df["Quantity"] > 0) & (df["UnitPrice"] > 0)].drop_duplicates()
    df["TotalPrice"] = df["Quantity"] * df["UnitPrice"]
    _done("clean", t, rows=len(df))

    t = time.time()
    as_of = df["InvoiceDate"].max().normalize() + pd.Timedelta(days=1)
    rfm = df.groupby("CustomerID").agg(last=("InvoiceDate", "max"),
                                       frequency=("InvoiceNo", "nunique"),
                                       monetary=("TotalPrice", "sum"))
    rfm["recency"] = (as_of - rfm["last"]).dt.days
    for col, sign in (("recency", -1), ("frequency", 1), ("monetary", 1)):
        rfm[f"{col[0]}_score"] = pd.qcut((sign * rfm[col]).rank(method="first"), 5,
                                         labels=[1, 2, 3, 4, 5]).astype(int)
    _done("rfm", t, customers=len(rfm))

    t = time.time()
    x = StandardScaler().fit_transform(np.log1p(rfm[["recency", "frequency", "monetary"]]
                                                .clip(lower=0)))
    scores = {}
    for k in range(2, 11):
        labels = KMeans(n_clusters=k, n_init=10, random_state=42).fit_predict(x)
        scores[k] = float(silhouette_score(x, labels))
        _done(f"kmeans k={k} + silhouette", t)
    _done("kmeans sweep", t, best_k=max(scores, key=scores.get))

    t = time.time()
    cutoff = as_of - pd.Timedelta(days=90)
    pre, post = df[df["InvoiceDate"] < cutoff], df[df["InvoiceDate"] >= cutoff]
    feats = pre.groupby("CustomerID").agg(last=("InvoiceDate", "max"),
                                          first=("InvoiceDate", "min"),
                                          frequency=("InvoiceNo", "nunique"),
                                          monetary=("TotalPrice", "sum"))
    feats["recency"] = (cutoff - feats["last"]).dt.days
    feats["tenure"] = (cutoff - feats["first"]).dt.days
    label = post.groupby("CustomerID")["TotalPrice"].sum().rename("spend")
    data = feats.join(label, how="left").fillna({"spend": 0.0})
    cols = ["recency", "tenure", "frequency", "monetary"]
    model = GradientBoostingRegressor(n_estimators=30, max_depth=4, learning_rate=0.1,
                                      random_state=42).fit(data[cols], data["spend"])
    model.predict(data[cols])
    _done("gbt spend model", t, examples=len(data))


if __name__ == "__main__":
    main(sys.argv[1])
