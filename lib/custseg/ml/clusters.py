"""Customer clusters on log1p-transformed, standardised customer features.

The fitted model is one Spark ``PipelineModel`` (log transform, assembler, scaler, the
clustering model, and the relabelling to stable cluster numbers), so the registered model
assigns new customers from raw features with the labels the gold tables hold. k is swept over
``cluster.k_min``..``cluster.k_max`` and chosen by ``choose_k``: stability on seeded resamples
first, then the elbow of the within-cluster sum of squares against the silhouette (or the BIC
for a Gaussian mixture).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations

from pyspark.ml import Estimator, Model, Pipeline, PipelineModel
from pyspark.ml.clustering import BisectingKMeans, GaussianMixture, KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import SQLTransformer, StandardScaler, VectorAssembler
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from custseg.config import Config
from custseg.runtime.threads import run_all

ROWS_PER_PARTITION = 100_000
# Spark's GaussianMixture has no covariance regularisation (scikit-learn's reg_covar). On
# near-duplicate or collinear customers a component's covariance shrinks towards singular, its
# density overflows, and the NaN that follows sends the pure-Java LAPACK behind eigSym into a
# loop that never ends (a task that runs for ever). A mixture is therefore fitted on features
# nudged by a jitter of this standard deviation: on standardised features, variance 1e-6 (the
# reg_covar default) added to every component's covariance, far below any segment's spread.
MIXTURE_JITTER = 1e-3


@dataclass
class Sweep:
    """The criteria of every k tried, the chosen k and why it won."""

    wcss: dict[int, float] = field(default_factory=dict)
    silhouette: dict[int, float] = field(default_factory=dict)
    stability: dict[int, float] = field(default_factory=dict)
    bic: dict[int, float] = field(default_factory=dict)
    chosen_k: int = 0
    elbow_k: int = 0
    reason: str = ""
    verdicts: dict[int, str] = field(default_factory=dict)
    algorithm: str = "kmeans"
    customers: int = 0
    swept_on: int = 0


def prep_pipeline(features: list[str], centre: bool = True) -> Pipeline:
    """log1p (nulls and negatives as 0), assemble, standardise.

    ``centre=False`` scales without subtracting the mean, for bisecting k-means: Spark splits
    a cluster by nudging its centre in proportion to the centre's norm, so a population
    centred on zero is never split (every customer lands in one cluster). Distances, and so
    the clusters, do not depend on the shift.
    """
    logs = ", ".join(
        f"log1p(greatest(coalesce(CAST({f} AS DOUBLE), 0D), 0D)) AS log_{f}" for f in features)
    return Pipeline(stages=[
        SQLTransformer(statement=f"SELECT *, {logs} FROM __THIS__"),
        VectorAssembler(inputCols=[f"log_{f}" for f in features], outputCol="raw_features"),
        StandardScaler(inputCol="raw_features", outputCol="features", withMean=centre,
                       withStd=True),
    ])


def elbow(wcss: dict[int, float]) -> int:
    """The k farthest below the straight line from the first to the last point (kneedle)."""
    ks = sorted(wcss)
    if len(ks) < 3:
        return ks[0]
    x0, x1, y0, y1 = ks[0], ks[-1], wcss[ks[0]], wcss[ks[-1]]
    span_y = (y0 - y1) or 1.0

    def gap(k: int) -> float:
        line = y0 + (y1 - y0) * (k - x0) / (x1 - x0)
        return (line - wcss[k]) / span_y

    return max(ks[1:-1], key=gap)


def adjusted_rand_index(contingency: list[tuple[int, int, int]]) -> float | None:
    """ARI from (label a, label b, count) cells of the two assignments' contingency table."""
    def pairs(n: float) -> float:
        return n * (n - 1) / 2

    rows: dict[int, int] = {}
    cols: dict[int, int] = {}
    for a, b, n in contingency:
        rows[a] = rows.get(a, 0) + n
        cols[b] = cols.get(b, 0) + n
    total = sum(rows.values())
    if total < 2:
        return None
    index = sum(pairs(n) for _, _, n in contingency)
    sum_a = sum(pairs(n) for n in rows.values())
    sum_b = sum(pairs(n) for n in cols.values())
    expected = sum_a * sum_b / pairs(total)
    top = (sum_a + sum_b) / 2
    if top == expected:
        return 1.0
    return (index - expected) / (top - expected)


def choose_k(sweep: Sweep, min_stability: float, tolerance: float,
             fixed: int | None = None) -> None:
    """Set ``sweep.chosen_k``, ``reason`` and a verdict per k from the criteria.

    The rule: a k whose stability (mean adjusted Rand index between fits on resamples) is
    below ``min_stability`` is not chosen. Among the stable k, a Gaussian mixture takes the
    lowest BIC; otherwise the elbow of the WCSS (kneedle) wins if it is stable and its
    silhouette is within ``tolerance`` of the best stable silhouette, else the best stable
    silhouette wins (the smaller k on a tie). When no k is stable, the most stable k is taken
    and the reason says so. ``cluster.k`` overrides all of this.
    """
    ks = sorted(sweep.stability)
    sweep.elbow_k = elbow(sweep.wcss) if sweep.wcss else 0
    stable = [k for k in ks if sweep.stability[k] >= min_stability]
    sil = sweep.silhouette
    for k in ks:
        sweep.verdicts[k] = (f"stable (ARI {sweep.stability[k]:.2f})" if k in stable else
                             f"unstable (ARI {sweep.stability[k]:.2f} < {min_stability:.2f})")
    if fixed:
        sweep.chosen_k, sweep.reason = fixed, f"k = {fixed} fixed by cluster.k"
    elif not stable:
        sweep.chosen_k = max(ks, key=lambda k: (sweep.stability[k], -k))
        sweep.reason = (f"no k reached stability {min_stability:.2f}; k = {sweep.chosen_k} is "
                        f"the most stable (ARI {sweep.stability[sweep.chosen_k]:.2f})")
    elif sweep.algorithm == "gaussian_mixture":
        sweep.chosen_k = min(stable, key=lambda k: (sweep.bic[k], k))
        sweep.reason = (f"lowest BIC ({sweep.bic[sweep.chosen_k]:,.0f}) among the stable k "
                        f"({', '.join(map(str, stable))})")
    else:
        best = max(stable, key=lambda k: (sil[k], -k))
        e = sweep.elbow_k
        if e in stable and sil[e] >= sil[best] - tolerance:
            sweep.chosen_k = e
            sweep.reason = (f"the elbow of the WCSS, stable (ARI {sweep.stability[e]:.2f} >= "
                            f"{min_stability:.2f}), silhouette {sil[e]:.3f} within "
                            f"{tolerance:.2f} of the best stable one ({sil[best]:.3f}, k = {best})")
        else:
            why = (f"is unstable (ARI {sweep.stability[e]:.2f})" if e not in stable else
                   f"has silhouette {sil[e]:.3f}, more than {tolerance:.2f} below")
            sweep.chosen_k = best
            sweep.reason = (f"the best silhouette ({sil[best]:.3f}) among the stable k; the "
                            f"elbow k = {e} {why}")
    sweep.verdicts[sweep.chosen_k] = "chosen: " + sweep.reason


def kmeans_input(points: DataFrame, rows: int) -> DataFrame:
    """``points`` in a fixed order and partitioning, with a partition per
    ``ROWS_PER_PARTITION`` rows (at most the shuffle partitions).

    KMeans|| initialisation samples by partition and position, so both are fixed for a seed to
    repeat. Each KMeans iteration is a Spark job with a task per partition: on 220,000
    customers, 16 partitions of 14,000 points made the k sweep 3 to 5 times slower than 2.
    """
    spark = points.sparkSession
    most = int(spark.conf.get("spark.sql.shuffle.partitions"))
    parts = max(1, min(most, -(-rows // ROWS_PER_PARTITION)))
    return points.repartition(parts, "customer_id").sortWithinPartitions("customer_id")


def estimator(algorithm: str, k: int, seed: int, max_iter: int,
              prediction: str = "raw_cluster") -> Estimator:
    """The Spark MLlib clustering estimator of ``cluster.algorithm``.

    KMeans is given the row solver by name. Its default, ``auto``, runs a summary query of the
    input (the sample's shuffle and sort again) on every fit only to pick a solver, and Spark
    4.1 picks row for any input with at least as many rows as features: it compares the sum
    of the indices of the features with a non-zero value, not their counts, with half the
    input's cells.
    """
    common = {"k": k, "seed": seed, "maxIter": max_iter, "featuresCol": "features",
              "predictionCol": prediction}
    if algorithm == "bisecting_kmeans":
        return BisectingKMeans(**common)
    if algorithm == "gaussian_mixture":
        return GaussianMixture(**common, probabilityCol=f"{prediction}_probability")
    return KMeans(**common, solver="row")


def fit_input(points: DataFrame, algorithm: str, seed: int) -> DataFrame:
    """The feature vectors an estimator of ``algorithm`` is fitted on.

    A Gaussian mixture gets ``MIXTURE_JITTER``: each coordinate moves by a uniform offset
    picked by a seeded hash of the customer id and the coordinate, so the same customer gets
    the same offset whatever the partitioning. Assignments use the features as they are.
    """
    if algorithm != "gaussian_mixture":
        return points.select("features")
    width = MIXTURE_JITTER * math.sqrt(12.0)  # a uniform's variance is width^2 / 12

    def nudge(x: Column, i: Column) -> Column:
        u = F.pmod(F.xxhash64("customer_id", i, F.lit(seed)), F.lit(1 << 30)) / float(1 << 30)
        return x + (u - 0.5) * width

    nudged = F.transform(vector_to_array("features"), nudge)
    return points.select(array_to_vector(nudged).alias("features"))


def centres(model: Model) -> list[tuple[float, ...]]:
    """Cluster centres (a mixture's component means) in the model's own label order."""
    if hasattr(model, "clusterCenters"):
        return [tuple(float(v) for v in c) for c in model.clusterCenters()]
    return [tuple(float(v) for v in g.mean) for g in model.gaussians]


def bic(model: Model, dims: int, n: int) -> float:
    """Bayesian information criterion of a full-covariance Gaussian mixture."""
    k = len(model.weights)
    params = k * dims + k * dims * (dims + 1) / 2 + (k - 1)
    return params * math.log(n) - 2 * model.summary.logLikelihood


def relabel_stage(model: Model) -> SQLTransformer:
    """``raw_cluster`` -> ``cluster``: numbered by the centres in descending order.

    Algorithms number clusters in the order they happened to find them; numbering by the
    centres gives the same label to the same cluster across refits and registered versions,
    and, as a stage of the registered pipeline, the labels it assigns are those in the tables.
    """
    c = centres(model)
    order = sorted(range(len(c)), key=lambda i: c[i], reverse=True)
    cases = " ".join(f"WHEN {old} THEN {new}" for new, old in enumerate(order))
    return SQLTransformer(statement=f"SELECT *, CAST(CASE raw_cluster {cases} END AS INT) "
                                    "AS cluster FROM __THIS__")


def _resample(sample: DataFrame, seed: int, fraction: float) -> DataFrame:
    keep = F.pmod(F.xxhash64("customer_id", F.lit(seed)), F.lit(10_000)) < int(fraction * 10_000)
    return sample.where(keep)


def _fits(sample: DataFrame, base: DataFrame, k: int, cl: Config
          ) -> tuple[Model, float, list[Model]]:
    """The fit of k on every swept customer with its silhouette, and the fits on the
    ``cluster.resamples`` seeded subsamples of ``base`` (each keeps
    ``cluster.resample_fraction`` of its customers, picked by a hash of the customer id, and
    fits with its own seed), side by side: fits of a few thousand points spend most of their
    time scheduling jobs."""
    def full() -> tuple[Model, float]:
        model = estimator(cl["algorithm"], k, cl["seed"], cl["max_iter"]).fit(
            fit_input(sample, cl["algorithm"], cl["seed"]))
        evaluator = ClusteringEvaluator(featuresCol="features", predictionCol="raw_cluster")
        return model, float(evaluator.evaluate(model.transform(sample)))

    def resample(r: int) -> Callable[[], Model]:
        seed = cl["seed"] + 1 + r
        return lambda: estimator(cl["algorithm"], k, seed, cl["max_iter"], f"k{k}_r{r}").fit(
            fit_input(_resample(base, seed, cl["resample_fraction"]), cl["algorithm"],
                      cl["seed"]))

    out = run_all([full, *(resample(r) for r in range(cl["resamples"]))])
    model, silhouette = out[0]
    return model, silhouette, out[1:]


def stability(sample: DataFrame, resampled: dict[int, list[Model]]) -> dict[int, float]:
    """Per k, the mean adjusted Rand index between the assignments of the swept customers by
    each pair of its resample fits.

    Every fit labels every swept customer in one pass; only the k x k contingency tables of
    the pairs reach the driver.
    """
    scored = sample
    for fits in resampled.values():
        for fitted in fits:
            scored = fitted.transform(scored)
    cells = [F.struct(F.lit(k).alias("k"), F.lit(f"{a}/{b}").alias("pair"),
                      F.col(a).alias("a"), F.col(b).alias("b"))
             for k, fits in resampled.items()
             for a, b in combinations([f.getPredictionCol() for f in fits], 2)]
    rows = (scored.select(F.explode(F.array(*cells)).alias("c")).select("c.*")
            .groupBy("k", "pair", "a", "b").count().collect())  # at most k x k cells a pair
    out: dict[int, float] = {}
    for k in resampled:
        # in a fixed order: summed in a set's order, which Python's string hashing changes
        # from one process to the next, the mean moved in its last bit between runs
        pairs = sorted({r["pair"] for r in rows if r["k"] == k})
        aris = [adjusted_rand_index([(int(r["a"]), int(r["b"]), r["count"]) for r in rows
                                     if r["k"] == k and r["pair"] == p]) for p in pairs]
        out[k] = sum(a if a is not None else 1.0 for a in aris) / len(aris)
    return out


def _hash_sample(points: DataFrame, n: int, cap: int, seed: int) -> DataFrame:
    """About ``cap`` of the ``n`` rows, the same ones whatever the partitioning."""
    if n <= cap:
        return points
    return points.where(F.pmod(F.xxhash64("customer_id", F.lit(seed)), F.lit(n)) < cap)


def _sweep_sample(points: DataFrame, n: int, cap: int, seed: int) -> DataFrame:
    return kmeans_input(_hash_sample(points, n, cap, seed), min(n, cap))


def fit_clusters(features: DataFrame, cfg: Config,
                 step: Callable[[str], None] | None = None) -> tuple[PipelineModel, Sweep]:
    """Sweep k over the configured range and return the chosen model and the sweep.

    Above ``cluster.sweep_sample`` customers the sweep runs on a sample picked by a seeded hash
    of the customer id (the same customers whatever the partitioning), and only the chosen k is
    fitted on every customer. The estimator is given only the feature vectors, a query it
    finds uncached, so it keeps its own deserialised copy for its iterations instead of
    decoding cached rows in every one.
    """
    cl = cfg["cluster"]
    prep = prep_pipeline(cl["features"], cl["algorithm"] != "bisecting_kmeans").fit(features)
    points = prep.transform(features).select("customer_id", "features")
    n = points.count()
    sample = _sweep_sample(points, n, cl["sweep_sample"], cl["seed"]).persist()
    sweep = Sweep(algorithm=cl["algorithm"], customers=n, swept_on=sample.count())
    k_max = min(cl["k_max"], max(2, sweep.swept_on - 1))
    ks = [cl["k"]] if cl["k"] else list(range(min(cl["k_min"], k_max), k_max + 1))
    # stability needs far fewer customers than the sweep: its fits and the pass that labels
    # every customer with each of them run on at most cluster.stability_sample
    base = _hash_sample(sample, sweep.swept_on, cl["stability_sample"], cl["seed"] + 1)
    models, resampled = {}, {}
    for k in ks:
        if step:
            step(f"k = {k} of {ks[0]}..{ks[-1]}: fit, silhouette, {cl['resamples']} resamples")
        models[k], sweep.silhouette[k], resampled[k] = _fits(sample, base, k, cl)
        if cl["algorithm"] == "gaussian_mixture":
            sweep.bic[k] = bic(models[k], len(cl["features"]), sweep.swept_on)
        else:
            sweep.wcss[k] = float(models[k].summary.trainingCost)
    if step:
        step("stability: every pair of resample fits compared")
    sweep.stability = stability(base, resampled)
    sample.unpersist()
    choose_k(sweep, cl["min_stability"], cl["silhouette_tolerance"], cl["k"])
    chosen = models[sweep.chosen_k]
    if n > cl["sweep_sample"]:
        chosen = estimator(cl["algorithm"], sweep.chosen_k, cl["seed"], cl["max_iter"]).fit(
            fit_input(kmeans_input(points, n), cl["algorithm"], cl["seed"]))
    return PipelineModel(stages=[*prep.stages, chosen, relabel_stage(chosen)]), sweep


def assign(model: PipelineModel, features: DataFrame) -> DataFrame:
    """customer_id, as_of and cluster for every customer."""
    if not isinstance(model.stages[-1], SQLTransformer):  # registered before relabelling
        last = model.stages[-1].copy().setPredictionCol("raw_cluster")
        model = PipelineModel(stages=[*model.stages[:-1], last, relabel_stage(last)])
    return model.transform(features).select("customer_id", "as_of", "cluster")


NAME_FEATURES = ("recency_days", "frequency", "monetary")
# feature: (word for a cluster above the population, word for one below)
WORDS = {
    "recency_days": ("lapsed", "recent"),
    "frequency": ("frequent", "one-off"),
    "monetary": ("high-spending", "low-spending"),
    "tenure_days": ("long-standing", "new"),
    "avg_order_value": ("big-basket", "small-basket"),
    "distinct_products": ("wide-range", "narrow-range"),
    "days_between_purchases": ("slow-repeat", "quick-repeat"),
    "return_rate": ("high-return", "low-return"),
}
# the word for a cluster at least STRONG_Z away, where English has one
STRONGER = {"lapsed": "long-lapsed", "recent": "very recent", "frequent": "very frequent",
            "high-spending": "top-spending", "big-basket": "bulk-basket", "new": "brand-new"}
MIN_Z = 0.3  # a feature closer than this to the population's median does not name a cluster
STRONG_Z = 1.5


def name_features(features: list[str]) -> list[str]:
    """R, F, M and the configured cluster features: the medians a profile keeps."""
    return [*NAME_FEATURES, *(f for f in features if f not in NAME_FEATURES)]


def profiles(assigned: DataFrame, segments: DataFrame, features: list[str]) -> DataFrame:
    """Per cluster: size, shares, mean R, F, M, the median of every feature in
    ``name_features`` and the dominant RFM segment."""
    named = name_features(features)
    df = assigned.join(segments.select("customer_id", "segment", *named), "customer_id")
    totals = df.agg(F.count("*").alias("all_customers"), F.sum("monetary").alias("all_revenue"))
    per = df.groupBy("as_of", "cluster").agg(
        F.count("*").alias("customers"),
        F.sum("monetary").alias("revenue"),
        F.avg("recency_days").alias("mean_recency_days"),
        F.avg("frequency").alias("mean_frequency"),
        F.avg("monetary").alias("mean_monetary"),
        *[F.percentile_approx(F.col(f).cast("double"), 0.5, 10000).alias(f"median_{f}")
          for f in named],
    )
    dominant = (df.groupBy("cluster", "segment").count().groupBy("cluster")
                .agg(F.max_by("segment", F.struct("count", "segment")).alias("dominant_segment")))
    return (per.join(dominant, "cluster").crossJoin(F.broadcast(totals))
            .withColumn("share_customers", F.col("customers") / F.col("all_customers"))
            .withColumn("share_revenue", F.col("revenue") / F.col("all_revenue"))
            .drop("all_customers", "all_revenue"))


def population(segments: DataFrame, features: list[str]) -> tuple[dict[str, float],
                                                                  dict[str, float]]:
    """Median and robust scale of each feature over all customers (two one-row queries).

    The scale is 1.4826 times the median absolute deviation (the standard deviation for a
    normal distribution); where over half the customers share one value (a return rate of 0)
    the MAD is 0 and the mean absolute deviation stands in.
    """
    named = name_features(features)
    med = segments.agg(*[F.percentile_approx(F.col(f).cast("double"), 0.5, 10000).alias(f)
                         for f in named]).first()
    centre = {f: float(med[f] or 0.0) for f in named}
    dev = {f: F.abs(F.col(f).cast("double") - F.lit(centre[f])) for f in named}
    row = segments.agg(*[F.percentile_approx(dev[f], 0.5, 10000).alias(f"mad_{f}")
                         for f in named], *[F.avg(dev[f]).alias(f"mean_{f}")
                                            for f in named]).first()
    scale = {f: 1.4826 * (row[f"mad_{f}"] or 0.0) or (row[f"mean_{f}"] or 0.0) or 1.0
             for f in named}
    return centre, scale


def robust_z(row: dict, centre: dict[str, float], scale: dict[str, float]) -> dict[str, float]:
    """A cluster's medians as robust z-scores against the population."""
    return {f: ((row[f"median_{f}"] or 0.0) - centre[f]) / scale[f] for f in centre}


def _noun(row: dict, z: dict[str, float]) -> str:
    if (row["median_frequency"] or 0) <= 1:
        return "one-time buyers"
    return "regulars" if z["frequency"] >= MIN_Z else "customers"


def _word(feature: str, z: float) -> str:
    word = WORDS[feature][0 if z > 0 else 1]
    return STRONGER.get(word, word) if abs(z) >= STRONG_Z else word


def _name(row: dict, z: dict[str, float], words: int) -> str:
    noun = _noun(row, z)
    skip = {"frequency"} if noun != "customers" else set()
    ranked = sorted((f for f in z if f not in skip and abs(z[f]) >= MIN_Z and f in WORDS),
                    key=lambda f: -abs(z[f]))
    adjectives = [_word(f, z[f]) for f in ranked[:words]]
    if not adjectives and noun == "customers":
        return "typical customers"
    return " ".join([*adjectives, noun])


def name_clusters(profile_rows: list[dict], centre: dict[str, float],
                  scale: dict[str, float]) -> dict[int, str]:
    """A name per cluster from the features on which its medians differ most from the whole
    population, in robust z-scores: the two farthest (at least ``MIN_Z`` away) as adjectives,
    and a noun for how often they buy. Names are unique: a clash takes a third adjective,
    then the cluster's dominant RFM segment, then the cluster number."""
    z = {r["cluster"]: robust_z(r, centre, scale) for r in profile_rows}
    rows = {r["cluster"]: r for r in profile_rows}
    names = {c: _name(rows[c], z[c], 2) for c in sorted(rows)}
    for rename in (lambda c: _name(rows[c], z[c], 3),
                   lambda c: f"{names[c]}, mostly {rows[c]['dominant_segment']}",
                   lambda c: f"{names[c]} (cluster {c})"):
        clashing = [c for c in names if list(names.values()).count(names[c]) > 1]
        names.update({c: rename(c) for c in clashing})
    return names
