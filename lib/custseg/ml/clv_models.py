"""The candidate customer-value models, each one Spark ``PipelineModel`` from the feature
columns to ``predicted_spend``, its 80% interval and ``predicted_tier``.

Families:
- ``gbt``: a hurdle model. P(spend > 0) from a ``GBTClassifier`` times the spend of buyers
  from a ``GBTRegressor`` on log spend, taken back to money with Duan's smearing factor; the
  two are multiplied in money, not in log space.
- ``bgnbd_gg`` and ``paretonbd_gg``: expected purchases in the horizon times the Gamma-Gamma
  spend per purchase, with the fitted parameters inside the model (``BtydSpend``).
- ``past_spend_rate``: the customer's spend per day of tenure (at least one horizon) times the
  horizon; a baseline that serves when nothing beats it.
- ``blend``: a weighted mean of the others in money (``clv.blend``, by default a third each of
  gbt, past_spend_rate and paretonbd_gg). The trees order the bulk of customers well, the
  spend rate is hard to beat on a wholesaler's steady accounts, and the probabilistic model
  keeps the largest spenders in reach when the horizon holds a season the training cutoffs
  never saw.

Every model ends with the same two stages: the 80% interval, looked up from the spend of
training examples predicted alike, and the tier, from the predicted spend and the configured
cuts (on the UCI data this beat a one-vs-rest GBT classifier on macro-F1 at every tuning
origin).
"""

from __future__ import annotations

from pyspark import keyword_only
from pyspark.ml import Pipeline, PipelineModel, Transformer
from pyspark.ml.classification import GBTClassificationModel, GBTClassifier
from pyspark.ml.feature import SQLTransformer, StringIndexer, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.regression import GBTRegressionModel, GBTRegressor
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from custseg.config import Config
from custseg.io.arrow import to_pandas
from custseg.ml import btyd
from custseg.ml.clv import EPOCH, KEY, BtydFits, gg_spend, model_features, purchase_table
from custseg.ml.quantiles import bucketizer, even_cuts
from custseg.runtime.threads import run_all

FAMILIES = ("gbt", "bgnbd_gg", "paretonbd_gg", "past_spend_rate", "blend")
_ANY_DAY = EPOCH  # fixed parameters: the same at every date
OUTPUTS = ("predicted_spend", "predicted_spend_p10", "predicted_spend_p90", "predicted_tier")
INTERVAL_BUCKETS = 20


class VectorElement(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable,
                    DefaultParamsWritable):
    """One element of a vector column as a double (a classifier's P(class 1))."""

    index = Param(Params._dummy(), "index", "position in the vector", TypeConverters.toInt)

    @keyword_only
    def __init__(self, inputCol: str | None = None, outputCol: str | None = None,
                 index: int = 1) -> None:
        super().__init__()
        self._setDefault(index=1)
        self._set(**self._input_kwargs)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        element = vector_to_array(F.col(self.getInputCol()))[self.getOrDefault(self.index)]
        return dataset.withColumn(self.getOutputCol(), element)


class BtydSpend(Transformer, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """Spend in the horizon from fitted BG/NBD or Pareto/NBD and Gamma-Gamma parameters.

    Reads the purchase summary columns (``repeat_purchases``, ``repeat_span_days``,
    ``age_days``, ``repeat_spend``). The purchase model is evaluated on the driver once per
    distinct (x, t_x, T), whose number is bounded by the history's length in days, not by the
    customers, and joined back.
    """

    model = Param(Params._dummy(), "model", "bgnbd or paretonbd", TypeConverters.toString)
    purchase = Param(Params._dummy(), "purchase", "purchase model parameters",
                     TypeConverters.toListFloat)
    dropout = Param(Params._dummy(), "dropout", "whether the data identify dropout",
                    TypeConverters.toBoolean)
    spend = Param(Params._dummy(), "spend", "Gamma-Gamma p, q, v", TypeConverters.toListFloat)
    population = Param(Params._dummy(), "population",
                       "spend per purchase of a customer without repeat purchases",
                       TypeConverters.toFloat)
    horizon = Param(Params._dummy(), "horizon", "days predicted", TypeConverters.toInt)

    @keyword_only
    def __init__(self, outputCol: str | None = None, model: str | None = None,
                 purchase: list[float] | None = None, dropout: bool = True,
                 spend: list[float] | None = None, population: float | None = None,
                 horizon: int | None = None) -> None:
        super().__init__()
        self._set(**self._input_kwargs)

    @classmethod
    def of(cls, fits: BtydFits, model: str, horizon: int, output: str) -> BtydSpend:
        """The stage for one purchase model of ``fits``."""
        fit = getattr(fits, model)
        return cls(outputCol=output, model=model, purchase=list(fit.values()),
                   dropout=fit.dropout_identified, spend=list(fits.gammagamma.values()),
                   population=float(fits.population_spend), horizon=horizon)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        get = self.getOrDefault
        model = get(self.model)
        names = {"bgnbd": ("r", "alpha", "a", "b"), "paretonbd": ("r", "alpha", "s", "beta")}
        fit = btyd.Fit(model, dict(zip(names[model], get(self.purchase), strict=True)), 0.0,
                       0.0, 0, True, dropout_identified=get(self.dropout))
        keys = to_pandas(dataset.select(*KEY).distinct())  # bounded by the history's days
        keys["day"] = (_ANY_DAY - EPOCH).days
        table = purchase_table(dataset.sparkSession, keys, {_ANY_DAY: {model: fit}},
                               get(self.horizon))
        table = table.select(*KEY, F.col(f"{model}_purchases").alias("_btyd_purchases"))
        p, q, v = get(self.spend)
        spend = gg_spend(F.lit(p), F.lit(q), F.lit(v), F.lit(get(self.population)))
        return (dataset.join(F.broadcast(table), KEY, "left")
                .withColumn(self.getOutputCol(),
                            F.coalesce(F.col("_btyd_purchases"), F.lit(0.0)) * spend)
                .drop("_btyd_purchases"))


def prepare(features: list[str]) -> list:
    """Nulls as -1, the country as an index, all assembled into ``features``."""
    filled = ", ".join(f"coalesce(CAST({c} AS DOUBLE), -1D) AS f_{c}" for c in features)
    return [
        SQLTransformer(statement=f"SELECT *, {filled} FROM __THIS__"),
        StringIndexer(inputCol="country", outputCol="country_index", handleInvalid="keep",
                      stringOrderType="frequencyDesc"),
        VectorAssembler(inputCols=[f"f_{c}" for c in features] + ["country_index"],
                        outputCol="features"),
    ]


def gbt_params(cfg: Config, max_bins: int) -> dict:
    """The configured tree settings, shared by the classifier and the regressor."""
    g = cfg["clv"]["gbt"]
    return {"maxIter": g["max_iter"], "maxDepth": g["max_depth"], "stepSize": g["step_size"],
            "minInstancesPerNode": g["min_instances_per_node"], "seed": g["seed"],
            "maxBins": max_bins, "featuresCol": "features"}


def fit_input(train: DataFrame) -> DataFrame:
    """Training rows in a fixed order and few partitions: tree fits sample their split
    candidates by position, so the same rows must arrive the same way for the same model, and
    small partitions cost a task per partition in each of the many boosting jobs."""
    rows = train.count()
    most = int(train.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    parts = max(1, min(most, rows // 50_000 + 1))
    return train.repartition(parts, "customer_id").sortWithinPartitions("customer_id", "as_of")


def max_bins(train: DataFrame) -> int:
    """Bins enough for every country seen in training (plus the unseen bucket)."""
    countries = train.agg(F.countDistinct("country")).first()[0]
    return max(32, countries + 2)


class _GBTClassificationModel(GBTClassificationModel):
    """pyspark 4.1 made ``trees`` a ``cached_property``, and ``Params.params``, which passes
    over plain properties only, reads it as each model is made: a Python wrapper and some
    hundred py4j calls per tree, 0.15 to 0.29 s a 30-tree model in a warm session. As a
    property again, the trees are wrapped only when read; the Java model is the same."""

    @property
    def trees(self) -> list:  # type: ignore[override]
        return GBTClassificationModel.trees.func(self)


class _GBTRegressionModel(GBTRegressionModel):
    """``trees`` as a plain property (see ``_GBTClassificationModel``)."""

    @property
    def trees(self) -> list:  # type: ignore[override]
        return GBTRegressionModel.trees.func(self)


class _GBTClassifier(GBTClassifier):
    def _create_model(self, java_model: object) -> GBTClassificationModel:
        return _GBTClassificationModel(java_model)


class _GBTRegressor(GBTRegressor):
    def _create_model(self, java_model: object) -> GBTRegressionModel:
        return _GBTRegressionModel(java_model)


def fit_hurdle(train: DataFrame, cfg: Config, bins: int) -> list:
    """The fitted stages of the hurdle model, ending in ``gbt_spend``.

    P(buy) from a GBT classifier on all examples; log spend of buyers from a GBT regressor on
    the buyers only; spend = P(buy) x exp(log spend) x the smearing factor (the mean of
    exp(residual) over the buyers, so that the money level is unbiased).
    """
    prep = Pipeline(stages=prepare(model_features(cfg))).fit(train)
    data = (prep.transform(train)
            .withColumn("_buys", (F.col("actual_spend") > 0).cast("double"))
            .withColumn("_log_spend", F.log(F.greatest(F.col("actual_spend"), F.lit(1e-9)))))
    params = gbt_params(cfg, bins)
    buyers = data.where(F.col("_buys") > 0)
    classifier, regressor = run_all([
        lambda: (_GBTClassifier(labelCol="_buys", predictionCol="_buy_class", **params)
                 .setProbabilityCol("_buy_probability").setRawPredictionCol("_buy_raw")
                 .fit(data)),
        lambda: _GBTRegressor(labelCol="_log_spend", predictionCol="_log_amount",
                             **params).fit(buyers)])
    smear = regressor.transform(buyers).agg(
        F.avg(F.exp(F.col("_log_spend") - F.col("_log_amount")))).first()[0] or 1.0
    combine = SQLTransformer(statement=(
        f"SELECT *, greatest(_buy_p, 0D) * exp(_log_amount) * {float(smear)!r} AS gbt_spend "
        "FROM __THIS__"))
    return [*prep.stages, classifier, VectorElement(inputCol="_buy_probability",
                                                    outputCol="_buy_p", index=1),
            regressor, combine]


def _as_prediction(expr: str) -> SQLTransformer:
    return SQLTransformer(statement=f"SELECT *, greatest({expr}, 0D) AS predicted_spend "
                                    "FROM __THIS__")


def tier_stage(cuts: dict) -> SQLTransformer:
    """``predicted_tier`` from ``predicted_spend`` and the configured tier cuts."""
    return SQLTransformer(statement=(
        f"SELECT *, CASE WHEN predicted_spend >= {float(cuts['high'])!r} THEN 'High' "
        f"WHEN predicted_spend >= {float(cuts['mid'])!r} THEN 'Mid' ELSE 'Low' END "
        "AS predicted_tier FROM __THIS__"))


def interval_sql(edges: list[float], low: list[float], high: list[float]) -> str:
    """``predicted_spend_p10`` and ``_p90`` looked up by the bucket of ``predicted_spend``:
    bucket i holds the predictions below ``edges[i]`` (the last one the rest)."""
    def num(v: float) -> str:  # a bare 12.5 is a DECIMAL(3,1) literal in Spark SQL
        return f"CAST('{float(v)!r}' AS DOUBLE)"

    def case(values: list[float]) -> str:
        arms = " ".join(f"WHEN predicted_spend < {num(e)} THEN {num(v)}"
                        for e, v in zip(edges, values, strict=False))
        return f"CASE {arms} ELSE {num(values[-1])} END"

    return (f"SELECT *, {case(low)} AS predicted_spend_p10, {case(high)} "
            "AS predicted_spend_p90 FROM __THIS__")


def fit_intervals(scored: DataFrame, columns: dict[str, str],
                  buckets: int = INTERVAL_BUCKETS) -> dict[str, SQLTransformer]:
    """Each model's 80% interval stage, from its predictions (``columns``: model -> column of
    ``scored``) of training examples with their ``actual_spend``.

    A model's predictions are cut into ``buckets`` quantile buckets; in each, the interval is
    the 10% and 90% points of the actual spend, or, where at least 10% of the bucket spent
    nothing, 0 and the 80% point, so that it still holds 80% of the bucket. Two Spark jobs
    for all models: the cut points, then the per-bucket figures.
    """
    row = scored.agg(*[even_cuts(F.col(c), buckets, 10_000).alias(m)
                       for m, c in columns.items()]).first()
    edges = {m: sorted(set(row[m] or [])) for m in columns}
    bucketed = bucketizer(
        [[float("-inf"), *edges[m], float("inf")] for m in columns], list(columns.values()),
        [f"_bucket_{m}" for m in columns], handle_invalid="keep").transform(scored)
    exploded = bucketed.select("actual_spend", F.explode(F.array(*[
        F.struct(F.lit(m).alias("m"), F.col(f"_bucket_{m}").cast("int").alias("b"))
        for m in columns])).alias("_x"))
    figures = (exploded.groupBy(F.col("_x.m").alias("m"), F.col("_x.b").alias("b")).agg(
        F.avg((F.col("actual_spend") <= 0).cast("double")).alias("zero"),
        F.percentile_approx("actual_spend", F.expr("array(0.1, 0.8, 0.9)"), 10_000)
        .alias("q")).collect())  # at most buckets rows per model
    out = {}
    for m in columns:
        rows = {r["b"]: r for r in figures if r["m"] == m}
        low, high = [], []
        for i in range(len(edges[m]) + 1):
            r = rows.get(i) or rows[min(rows, key=lambda b, i=i: abs(b - i))]
            q10, q80, q90 = (float(v) for v in r["q"])
            zeros = r["zero"] >= 0.1
            low.append(0.0 if zeros else q10)
            high.append(q80 if zeros else q90)
        out[m] = SQLTransformer(statement=interval_sql(edges[m], low, high))
    return out


def spend_stages(hurdle: list, fits: BtydFits, cfg: Config) -> dict[str, list]:
    """Each family's stages from the features to ``predicted_spend``."""
    h = float(cfg["clv"]["horizon_days"])
    rate = f"monetary / greatest(CAST(tenure_days AS DOUBLE), {h!r}) * {h!r}"
    stages = {"gbt": [*hurdle, _as_prediction("gbt_spend")]}
    for model in btyd.PURCHASE_MODELS:
        stages[f"{model}_gg"] = [BtydSpend.of(fits, model, int(h), "btyd_spend"),
                                 _as_prediction("btyd_spend")]
    stages["past_spend_rate"] = [_as_prediction(rate)]
    weights = {k: float(v) for k, v in cfg["clv"]["blend"].items() if v > 0}
    total = sum(weights.values())
    parts = {"gbt": "gbt_spend", "past_spend_rate": f"({rate})",
             "bgnbd_gg": "_bgnbd_spend", "paretonbd_gg": "_paretonbd_spend"}
    blend = [*hurdle] if "gbt" in weights else []
    blend += [BtydSpend.of(fits, m, int(h), f"_{m}_spend") for m in btyd.PURCHASE_MODELS
              if f"{m}_gg" in weights]
    mix = " + ".join(f"{w / total!r} * {parts[k]}" for k, w in sorted(weights.items()))
    stages["blend"] = [*blend, _as_prediction(mix)]
    return stages


def fit_candidates(train: DataFrame, fits: BtydFits, cfg: Config) -> dict[str, PipelineModel]:
    """Every family fitted on ``train`` (stacked training examples) with the probabilistic
    parameters ``fits``, each with its interval and tier stages."""
    hurdle = fit_hurdle(train, cfg, max_bins(train))
    stages = spend_stages(hurdle, fits, cfg)
    scored = train.select(*dict.fromkeys(["customer_id", *KEY, "repeat_spend",
                                          *model_features(cfg), "country", "actual_spend"]))
    for family, family_stages in stages.items():
        done = PipelineModel(stages=family_stages).transform(scored)
        scored = done.select(*scored.columns, F.col("predicted_spend").alias(f"_p_{family}"))
    scored = scored.persist()
    intervals = fit_intervals(scored, {f: f"_p_{f}" for f in stages})
    scored.unpersist()
    cuts = cfg["clv"]["tier_cuts"]
    return {f: PipelineModel(stages=[*s, intervals[f], tier_stage(cuts)])
            for f, s in stages.items()}


def predict(model: PipelineModel, df: DataFrame, prefix: str) -> DataFrame:
    """``df`` plus the model's outputs as ``{prefix}_spend``, ``_p10``, ``_p90``, ``_tier``;
    its working columns are dropped, so several models can score the same rows in turn."""
    scored = model.transform(df)
    names = dict(zip(OUTPUTS, ("spend", "p10", "p90", "tier"), strict=True))
    return scored.select(*df.columns,
                         *[F.col(c).alias(f"{prefix}_{names[c]}") for c in OUTPUTS])
