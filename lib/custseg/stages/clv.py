"""The clv stage: plan the origins, build examples, fit or reuse every model family, judge them
out of time with intervals, promote by the champion rule, and score with the champions.

Evaluation origin E: the as-of date T with ``--backtest`` (actual spend after T must be in
the data), otherwise T - horizon, the last horizon whose outcome is known; then E - 30 days,
E - 60 days (``clv.origins``, ``clv.origin_step_days``). Each origin's models train on
examples at cutoffs every ``clv.snapshot_step_days`` from origin - horizon back through the
history, each cutoff with its own BTYD refit, so no transaction on or after the origin reaches
a feature or a training label. The models of origin E are registered; predictions at T come
from the ``champion`` alias of each registered model, so a rollback changes the next scoring.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from dataclasses import dataclass, field

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from custseg.config import Config
from custseg.errors import InputError
from custseg.io import lakehouse
from custseg.io.arrow import from_rows
from custseg.io.catalog import CANCELLATIONS, CLV_PREDICTIONS, FACT, SPEND_MODEL, TIER_MODEL
from custseg.ml import promotion
from custseg.ml.backtest import Bootstrap, Scores, evaluate
from custseg.ml.clv import BASELINES, BtydFits, examples, tier_of
from custseg.ml.clv_models import FAMILIES, fit_candidates, fit_input, predict
from custseg.runtime import context, memo, registry
from custseg.runtime.summary import StageSummary
from custseg.runtime.threads import run_all
from custseg.stages import clv_report
from custseg.stages.segment import resolve_as_of
from custseg.transforms.history import History

FINGERPRINT = "training_fingerprint"
FAMILY = "family"
LABELS_END = "labels_end"
CHAMPION = "champion"


@dataclass(frozen=True)
class Plan:
    """The dates of one run: origins newest first (the first is E) and each one's cutoffs."""

    as_of: dt.date
    horizon: int
    origins: tuple[dt.date, ...]
    cutoffs: dict[dt.date, tuple[dt.date, ...]]
    notes: tuple[str, ...] = ()

    @property
    def evaluation(self) -> dt.date:
        """E, the origin whose models are registered."""
        return self.origins[0]


def plan(first_day: dt.date, as_of: dt.date, horizon: int, clv: Config,
         backtest: bool) -> Plan:
    """The origins and their training cutoffs; an error when E has none."""
    day = dt.timedelta(days=1)
    evaluation = as_of if backtest else as_of - horizon * day
    earliest = first_day + clv["min_history_days"] * day
    origins, cutoffs, notes = [], {}, []
    for k in range(clv["origins"]):
        origin = evaluation - k * clv["origin_step_days"] * day
        cuts, cut = [], origin - horizon * day
        while cut >= earliest and len(cuts) < clv["max_snapshots"]:
            cuts.append(cut)
            cut -= clv["snapshot_step_days"] * day
        if cuts:
            origins.append(origin)
            cutoffs[origin] = tuple(cuts)
        elif k == 0:
            raise InputError(
                f"clv: not enough history for a {horizon}-day horizon: training needs a "
                f"cutoff on or before {origin - horizon * day} with {clv['min_history_days']} "
                f"days of invoices before it, but the first invoice is on {first_day}; use a "
                "shorter --horizon-days, a smaller clv.min_history_days or a later --as-of")
        else:
            notes.append(f"origin {origin} left out: no cutoff on or before "
                         f"{origin - horizon * day} has {clv['min_history_days']} days of "
                         "history")
    return Plan(as_of, horizon, tuple(origins), cutoffs, tuple(notes))


@dataclass
class Inputs:
    """The silver tables the stage reads, the purchase history cached from them, and what the
    stage knows of them."""

    history: History
    first_day: dt.date
    last_day: dt.date
    customers: int


def _inputs(spark: SparkSession, root: str) -> Inputs:
    fact_path = lakehouse.table_path(root, "silver", FACT)
    if not lakehouse.exists(spark, fact_path):
        raise InputError(f"{fact_path}: no silver table; run 'custseg refine' first")
    fact = lakehouse.read(spark, fact_path)
    cancel_path = lakehouse.table_path(root, "silver", CANCELLATIONS)
    cancellations = (lakehouse.read(spark, cancel_path) if lakehouse.exists(spark, cancel_path)
                     else from_rows(spark, [], "customer_id int, invoice_date timestamp, "
                                               "amount double"))
    history = History.of(fact, cancellations).persist()
    row = history.invoices.agg(F.min("invoice_date"), F.max("invoice_date"),
                               F.approx_count_distinct("customer_id")).first()
    if row[0] is None:
        history.unpersist()
        raise InputError("silver/fct_invoices has no identified customers: nothing to value")
    return Inputs(history, row[0].date(), row[1].date(), int(row[2]))


@dataclass
class Origin:
    """One origin's models, its examples and their scores."""

    day: dt.date
    models: dict[str, PipelineModel]
    examples: DataFrame
    fits: BtydFits
    scores: dict[str, Scores] = field(default_factory=dict)


@dataclass
class Examples:
    """Every example the run reads, each set built in one query and cached: the judged dates
    (the origins, and T when it is later) on every customer, the training cutoffs of all
    origins on a customer sample; and the BTYD fits at the judged dates."""

    judged: DataFrame
    train: DataFrame
    fits: dict[dt.date, BtydFits]
    per_cutoff: dict[dt.date, int]

    def release(self) -> None:
        """Unpersist both sets."""
        self.judged.unpersist()
        self.train.unpersist()


def build_examples(spark: SparkSession, data: Inputs, p: Plan, cfg: Config,
                   summary: StageSummary) -> Examples:
    """The judged and training examples of the plan (see ``Examples``)."""
    clv = cfg["clv"]
    judged_days = sorted({*p.origins, p.as_of})
    cutoffs = sorted({c for cs in p.cutoffs.values() for c in cs})
    summary.step(f"examples at {len(judged_days)} judged date(s) and {len(cutoffs)} training "
                 "cutoff(s)")
    most = max(len(cs) for cs in p.cutoffs.values())
    rate = min(1.0, clv["training_sample"] / max(1, data.customers * most))

    def build(history: History, days: list[dt.date]) -> tuple[DataFrame, dict, dict]:
        cached: list[DataFrame] = []
        df, fits = examples(spark, history, days, cfg, cached)
        df = df.persist()
        counts = {r["as_of"]: r["count"] for r in df.groupBy("as_of").count().collect()}
        for summary_df in cached:
            summary_df.unpersist()
        return df, fits, counts

    (judged, fits, _), (train, _, per_cutoff) = run_all([
        lambda: build(data.history, judged_days),
        lambda: build(data.history.sample(rate, clv["gbt"]["seed"]), cutoffs)])
    if rate < 1.0:
        summary.notes.append(f"training examples on a {rate:.1%} customer sample")
    return Examples(judged, train, fits, per_cutoff)


def _fit_origin(day: dt.date, cutoffs: tuple[dt.date, ...], ex: Examples, cfg: Config,
                reused: dict[str, PipelineModel] | None, summary: StageSummary) -> Origin:
    """The models trained for ``day`` on its cutoffs' examples, or ``reused`` ones."""
    judged = ex.judged.where(F.col("as_of") == F.lit(day))
    if reused is not None:
        return Origin(day, reused, judged, ex.fits[day])
    n = sum(ex.per_cutoff.get(c, 0) for c in cutoffs)
    if n < 10:
        raise InputError(f"clv: only {n} training examples before {day}")
    summary.step(f"origin {day}: fitting on {n:,} examples at {len(cutoffs)} cutoff(s)")
    started = time.time()
    train = fit_input(ex.train.where(F.col("as_of").isin(list(cutoffs)))).persist()
    models = fit_candidates(train, ex.fits[day], cfg)
    train.unpersist()
    summary.notes.append(f"origin {day}: {len(cutoffs)} training cutoff(s) "
                         f"{cutoffs[-1]}..{cutoffs[0]}, {n:,} examples, fitted in "
                         f"{time.time() - started:.0f} s")
    return Origin(day, models, judged, ex.fits[day])


def _judge(origin: Origin, incumbent: dict[str, PipelineModel] | None, cfg: Config) -> None:
    """Score every family, the baselines and the fairly judged champion at the origin."""
    scored = origin.examples
    for family, model in origin.models.items():
        scored = predict(model, scored, f"m_{family}")
    if incumbent:
        scored = predict(incumbent["spend"], scored, f"m_{CHAMPION}")
        scored = predict(incumbent["tier"], scored, "m_champion_t")
    cuts = cfg["clv"]["tier_cuts"]
    plain = [b for b in BASELINES if b not in origin.models]
    for name in plain:
        scored = scored.withColumn(f"{name}_tier", tier_of(F.col(name), cuts))
    scored = scored.persist()
    models = {f: (f"m_{f}_spend", f"m_{f}_tier") for f in origin.models}
    models.update({n: (n, f"{n}_tier") for n in plain})
    intervals = {f: (f"m_{f}_p10", f"m_{f}_p90") for f in origin.models}
    if incumbent:
        models[CHAMPION] = (f"m_{CHAMPION}_spend", "m_champion_t_tier")
        intervals[CHAMPION] = (f"m_{CHAMPION}_p10", f"m_{CHAMPION}_p90")
    b = cfg["clv"]["bootstrap"]
    origin.scores = evaluate(scored, models, Bootstrap(b["draws"], b["confidence"], b["seed"],
                                                       b["sample"]), intervals=intervals)
    scored.unpersist()


def _fingerprint(spark: SparkSession, root: str, cfg: Config, p: Plan) -> str:
    versions = [lakehouse.version(spark, lakehouse.table_path(root, "silver", t))
                for t in (FACT, CANCELLATIONS)]
    payload = json.dumps({"inputs": versions, "clv": cfg["clv"],
                          "origins": [str(o) for o in p.origins],
                          "cutoffs": {str(o): [str(c) for c in cs] for o, cs in p.cutoffs.items()},
                          "windows": cfg["segment"]["windows_days"]}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _load(name: str, ref: str) -> PipelineModel:
    return registry.load_spark_model(f"models:/{name}/{ref}" if ref.isdigit()
                                     else f"models:/{name}@{ref}")


def _registered(fingerprint: str) -> dict[str, dict[str, str]] | None:
    """The versions a run with the same fingerprint registered, per family, or None."""
    found = {f: {n: registry.find_version(n, {FINGERPRINT: fingerprint, FAMILY: f})
                 for n in (SPEND_MODEL, TIER_MODEL)} for f in FAMILIES}
    if all(v for versions in found.values() for v in versions.values()):
        return found
    return None


@dataclass
class Champion:
    """The registered champions before this run: versions, models, the origins they may be
    judged on (after their last training label)."""

    versions: dict[str, str]
    models: dict[str, PipelineModel]
    labels_end: dt.date | None


def _champion(summary: StageSummary) -> Champion | None:
    versions = {n: registry.champion_version(n) for n in (SPEND_MODEL, TIER_MODEL)}
    if not all(versions.values()):
        return None
    try:
        models = {"spend": _load(SPEND_MODEL, versions[SPEND_MODEL]),
                  "tier": _load(TIER_MODEL, versions[TIER_MODEL])}
    except Exception as exc:  # an older model this code cannot load
        summary.notes.append(f"the champion could not be loaded ({type(exc).__name__}): it "
                             "is not judged")
        return None
    ends = []
    for name, version in versions.items():
        tags = registry.version_tags(name, version)
        end = tags.get(LABELS_END) or tags.get("evaluation_date")
        ends.append(dt.date.fromisoformat(end) if end else None)
    labels_end = None if None in ends else max(ends)
    return Champion(versions, models, labels_end)


def clv(spark: SparkSession, root: str, cfg: Config, as_of: str | None = None,
        horizon_days: int | None = None, backtest: bool = False,
        use_champion: bool = False) -> StageSummary:
    """Write gold/clv_backtest, _deciles, _calibration and gold/clv_predictions."""
    start = time.time()
    summary = StageSummary("clv")
    cfg = _with_horizon(cfg, horizon_days)
    data = _inputs(spark, root)
    h = cfg["clv"]["horizon_days"]
    p = plan(data.first_day, resolve_as_of(spark, root, cfg, as_of, section="clv"), h,
             cfg["clv"], backtest)
    if p.evaluation > data.last_day:
        data.history.unpersist()
        latest = data.last_day + dt.timedelta(days=1 - h)
        raise InputError(
            f"clv: the evaluation origin {p.evaluation} is after the last invoice "
            f"({data.last_day}), so no spend after it is known to judge the models against; "
            f"with --backtest use an --as-of on or before {latest} (a full {h}-day horizon "
            "of invoices after it), or leave out --backtest")
    _plan_notes(p, data, summary)
    registry.configure(root, cfg)
    step = memo.Step(
        "clv", f"{p.as_of} h{h}", inputs=[("silver", FACT), ("silver", CANCELLATIONS)],
        outputs=[("gold", t) for t in (CLV_PREDICTIONS, clv_report.BACKTEST, clv_report.DECILES)],
        settings=dict(as_of=p.as_of, horizon_days=h, backtest=backtest, clv=cfg["clv"],
                      windows=cfg["segment"]["windows_days"], use_champion=use_champion,
                      champions=[registry.champion_version(n) for n in (SPEND_MODEL, TIER_MODEL)]
                      if use_champion else None))
    try:
        done = memo.materialise(spark, root, step, lambda _key: _run(
            spark, root, cfg, p, data, backtest, use_champion, summary))
    finally:
        data.history.unpersist()
    if done:
        summary.notes.append(f"as of {p.as_of}, horizon {h} days: same inputs and settings as "
                             f"run {done}; nothing written")
    summary.seconds = time.time() - start
    return summary


def _with_horizon(cfg: Config, horizon_days: int | None) -> Config:
    cfg = {**cfg, "clv": {**cfg["clv"]}}
    if horizon_days is not None:
        if horizon_days < 1:
            raise InputError(f"--horizon-days must be at least 1, got {horizon_days}")
        cfg["clv"]["horizon_days"] = horizon_days
    return cfg


def _plan_notes(p: Plan, data: Inputs, summary: StageSummary) -> None:
    end = p.evaluation + dt.timedelta(days=p.horizon)
    if end > data.last_day + dt.timedelta(days=1):
        summary.notes.append(f"warning: the data end on {data.last_day}, so actual spend "
                             f"covers only part of [{p.evaluation}, {end})")
    summary.notes.append(f"as of {p.as_of}, horizon {p.horizon} days; origins "
                         f"{', '.join(map(str, p.origins))}")
    summary.notes.extend(p.notes)


def _run(spark: SparkSession, root: str, cfg: Config, p: Plan, data: Inputs, backtest: bool,
         use_champion: bool, summary: StageSummary) -> None:
    """Fit or reuse, judge, promote, write the backtest, score: the stage's work."""
    import mlflow

    fingerprint = _fingerprint(spark, root, cfg, p)
    reuse = None if use_champion else _registered(fingerprint)
    champion = _champion(summary)
    if use_champion and champion is None:
        raise InputError(f"--use-champion: no '{registry.CHAMPION}' version of "
                         f"{SPEND_MODEL} and {TIER_MODEL} is registered yet")
    with mlflow.start_run(run_name=f"clv {p.as_of} h{p.horizon}" + (
            " backtest" if backtest else ""), tags=context.mlflow_tags("clv")) as run:
        mlflow.log_params({"as_of": str(p.as_of), "horizon_days": p.horizon,
                           "backtest": backtest, "use_champion": use_champion,
                           "origins": ",".join(map(str, p.origins)),
                           "cutoffs": ",".join(map(str, p.cutoffs[p.evaluation])),
                           **{f"blend_{k}": v for k, v in cfg["clv"]["blend"].items()},
                           **{f"gbt_{k}": v for k, v in cfg["clv"]["gbt"].items()}})
        ex = build_examples(spark, data, p, cfg, summary)
        _log_fits(ex.fits[p.evaluation], summary)
        try:
            origins = _origins(p, ex, cfg, reuse, champion, use_champion, summary)
            if use_champion:
                versions, registered = champion.versions, {}
                served = {n: CHAMPION for n in versions}
                summary.notes.append(f"champion versions {versions[SPEND_MODEL]} / "
                                     f"{versions[TIER_MODEL]}, not refitted")
            else:
                versions, registered, served = _promote(origins, p, champion, reuse,
                                                        fingerprint, cfg, summary)
            summary.step("writing the backtest")
            rows = clv_report.write_backtest(spark, root, origins, p, versions, registered,
                                             served, cfg, run.info.run_id)
            clv_report.write_calibration(spark, root, data.history.invoices, origins[0], p)
            summary.rows_in = origins[0].scores["past_spend_rate"].metrics["customers"]
            summary.notes.extend(clv_report.table(rows))
            summary.step(f"scoring {p.as_of} with the champions")
            current = ex.judged.where(F.col("as_of") == F.lit(p.as_of))
            _score(spark, root, current, p, backtest, run.info.run_id,
                   _in_memory(origins[0], registered, champion), summary)
        finally:
            ex.release()
    summary.notes.append(f"mlflow run {run.info.run_id}")


def _log_fits(fits: BtydFits, summary: StageSummary) -> None:
    """The BTYD parameters at E in MLflow, and a note when the data leave dropout unknown."""
    import mlflow

    for fit in (fits.bgnbd, fits.paretonbd, fits.gammagamma):
        mlflow.log_params({f"{fit.model}_{k}": round(v, 6) for k, v in fit.params.items()})
        mlflow.log_param(f"{fit.model}_dropout_identified", fit.dropout_identified)
    for fit in (fits.bgnbd, fits.paretonbd):
        if not fit.dropout_identified:
            summary.notes.append(f"{fit.model}: the data do not identify when customers stop "
                                 "buying; its predictions assume no dropout")


def _origins(p: Plan, ex: Examples, cfg: Config, reuse: dict | None,
             champion: Champion | None, use_champion: bool,
             summary: StageSummary) -> list[Origin]:
    """Each origin fitted (or its registered models reused) and judged."""
    reused: dict[dt.date, dict[str, PipelineModel] | None] = dict.fromkeys(p.origins)
    if use_champion:
        reused = {day: {} for day in p.origins}
    elif reuse is not None:
        reused[p.evaluation] = {f: _load(SPEND_MODEL, reuse[f][SPEND_MODEL]) for f in FAMILIES}
        summary.notes.append("same inputs and settings as registered versions "
                             f"{reuse['blend'][SPEND_MODEL]} ...: not refitted")
    origins = run_all([lambda d=day: _fit_origin(d, p.cutoffs[d], ex, cfg, reused[d], summary)
                       for day in p.origins])

    def judge(origin: Origin) -> None:
        fair = champion is not None and champion.labels_end is not None \
            and origin.day >= champion.labels_end
        summary.step(f"origin {origin.day}: judging")
        _judge(origin, champion.models if fair else None, cfg)

    run_all([lambda o=o: judge(o) for o in origins])
    return origins


def _results(origins: list[Origin], metric: str, names: list[str], total: bool
             ) -> dict[str, promotion.Results]:
    out: dict[str, promotion.Results] = {}
    for origin in origins:
        for name in names:
            s = origin.scores.get(name)
            if s is None:
                continue
            m = s.metrics
            error = (abs(m["predicted_total"] - m["actual_total"]) if total else None)
            out.setdefault(name, {})[origin.day] = promotion.Result(
                m.get(metric), s.draws.get(metric), error)
    return out


def _promote(origins: list[Origin], p: Plan, champion: Champion | None, reuse: dict | None,
             fingerprint: str, cfg: Config, summary: StageSummary
             ) -> tuple[dict[str, str], dict[str, dict[str, str]], dict[str, str]]:
    """Register the new models, decide the champions and point the aliases at them; return
    the champion versions, the registered versions per family and the family each serves."""
    confidence = cfg["clv"]["bootstrap"]["confidence"]
    summary.step("registering the models of origin E" if reuse is None else "promoting")
    registered = reuse or _register(origins[0], p, fingerprint)
    versions, served = {}, {}
    for name, metric, label, total in ((SPEND_MODEL, "normalised_gini", "normalised Gini", True),
                                       (TIER_MODEL, "tier_macro_f1", "macro-F1", False)):
        candidates = _results(origins, metric, list(FAMILIES), total)
        baselines = _results(origins, metric, list(BASELINES), total)
        incumbent = None
        held = _results(origins, metric, [CHAMPION], total).get(CHAMPION)
        if champion is not None and held:
            incumbent = (f"version {champion.versions[name]}", held)
        decision = promotion.choose(candidates, baselines, incumbent, label, confidence, total)
        summary.notes.extend(f"{name}: {n}" for n in decision.notes)
        if decision.winner in FAMILIES:
            versions[name] = registered[decision.winner][name]
            served[name] = decision.winner
            registry.set_champion(name, versions[name])
        else:
            versions[name] = champion.versions[name]
            served[name] = CHAMPION
        summary.notes.append(f"{name} '{registry.CHAMPION}': version {versions[name]} "
                             f"({served[name]})")
    return versions, registered, served


def _register(origin: Origin, p: Plan, fingerprint: str) -> dict[str, dict[str, str]]:
    """Log each family's model of origin E once and register it as a spend and a tier model."""
    out = {}
    uris = registry.log_spark_models(origin.models, "clv")
    for family, uri in uris.items():
        tags = {FINGERPRINT: fingerprint, FAMILY: family, LABELS_END: p.evaluation,
                "horizon_days": p.horizon}
        for name, metric in ((SPEND_MODEL, "normalised_gini"), (TIER_MODEL, "tier_macro_f1")):
            value = origin.scores[family].metrics.get(metric)
            out.setdefault(family, {})[name] = registry.register(
                uri, name, {**tags, metric: value})
    return out


def _in_memory(origin: Origin, registered: dict[str, dict[str, str]],
               champion: Champion | None) -> dict[tuple[str, str], PipelineModel]:
    """The models this run holds, by (registered name, version): the families of origin E
    under the versions they were registered (or found) as, and the champions it loaded."""
    known = {(name, version): origin.models[family]
             for family, versions in registered.items() if family in origin.models
             for name, version in versions.items()}
    if champion is not None:
        known[SPEND_MODEL, champion.versions[SPEND_MODEL]] = champion.models["spend"]
        known[TIER_MODEL, champion.versions[TIER_MODEL]] = champion.models["tier"]
    return known


def _score(spark: SparkSession, root: str, current: DataFrame, p: Plan, backtest: bool,
           run_id: str, known: dict[tuple[str, str], PipelineModel],
           summary: StageSummary) -> None:
    """gold/clv_predictions at T from the versions the champion aliases point at; a version
    this run already holds (``known``) is not loaded again, as it is the model saved."""
    spend_v = registry.champion_version(SPEND_MODEL)
    tier_v = registry.champion_version(TIER_MODEL)

    def model(name: str, version: str) -> PipelineModel:
        held = known.get((name, version))
        return held if held is not None else _load(name, version)

    scored = predict(model(SPEND_MODEL, spend_v), current, "s")
    scored = predict(model(TIER_MODEL, tier_v), scored, "t")
    families = {n: registry.version_tags(n, v).get(FAMILY, "gbt")
                for n, v in ((SPEND_MODEL, spend_v), (TIER_MODEL, tier_v))}
    clv_report.write_predictions(spark, root, scored, p, backtest, run_id,
                                 {SPEND_MODEL: spend_v, TIER_MODEL: tier_v}, families, summary)
