"""The configuration's schema: every key, its type, its range and the rules between keys.

pydantic v2 in strict mode with extra keys forbidden, so a typo is an unknown key and ``"3"`` is
not an integer. The values live in ``conf/defaults.yaml``; the schema says what a value may be.
``loading`` turns the first error into one line naming the key and its source: a field's own
message starts with what it "must" be, a rule between keys names the keys itself.
"""

from __future__ import annotations

import codecs
import datetime as dt
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

FIELDS = (
    "invoice_no", "stock_code", "description", "quantity", "invoice_date",
    "unit_price", "customer_id", "country", "amount",
)
FORMATS = ("auto", "xlsx", "csv", "parquet")
CLUSTER_FEATURES = (
    "recency_days", "frequency", "monetary", "tenure_days", "avg_order_value",
    "distinct_products", "days_between_purchases", "return_rate",
)
CLUSTER_ALGORITHMS = ("kmeans", "bisecting_kmeans", "gaussian_mixture")
# Python codec name -> the charset name Spark's CSV reader accepts.
SPARK_CHARSETS = {
    "utf-8": "utf-8", "iso8859-1": "iso-8859-1", "ascii": "us-ascii", "utf-16": "utf-16",
    "utf-16-be": "utf-16be", "utf-16-le": "utf-16le", "utf-32": "utf-32",
}


def one_of(*choices: str) -> AfterValidator:
    """One of ``choices``, named in the message when not."""
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return value
    return AfterValidator(check)


def _date(value: str | None) -> str | None:
    if value is not None:
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"must be a date yyyy-mm-dd, got {value!r}") from None
    return value


def _encoding(value: str) -> str:
    try:
        known = codecs.lookup(value).name in SPARK_CHARSETS
    except LookupError:
        known = False
    if not known:
        raise ValueError(f"is not a known encoding: {value!r} (use utf-8, latin-1, ascii, "
                         "utf-16 or utf-32)")
    return value


def _in(low: float, high: float, text: str, what: str = "") -> AfterValidator:
    """Within the interval ``text`` ("(0, 1]", "[0.5, 1)", ...) from ``low`` to ``high``;
    ``what`` is printed before "must", e.g. "(an adjusted Rand index) "."""
    open_low, open_high = text.startswith("("), text.endswith(")")

    def check(value: float) -> float:
        above = value > low if open_low else value >= low
        below = value < high if open_high else value <= high
        if not (above and below):
            raise ValueError(f"{what}must be in {text}, got {value}")
        return value
    return AfterValidator(check)


def _scalar(value: Any) -> Any:
    if not isinstance(value, (str, int, float, bool)):
        raise ValueError(f"must be a string, number or boolean, got {value!r}")
    return value


def _one_character(value: str) -> str:
    if len(value) != 1:
        raise ValueError(f"must be one character, got {value!r}")
    return value


Date = Annotated[str | None, AfterValidator(_date)]
AtLeast1 = Annotated[int, Field(ge=1)]
Positive = Annotated[float, Field(gt=0)]
Score = Annotated[int, Field(ge=1, le=5)]
Scores = Annotated[list[Score], Field(min_length=1)]


class Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class Spark(Section):
    master: str
    remote: str | None
    app_name: str
    driver_memory: str
    shuffle_partitions: AtLeast1
    adaptive_partitions: bool
    ui_enabled: bool
    class_archive: bool
    jit_scale: AtLeast1
    conf: dict[str, Annotated[Any, AfterValidator(_scalar)]]


class Delta(Section):
    jars_dir: str | None


class Columns(Section):
    invoice_no: str | None
    stock_code: str | None
    description: str | None
    quantity: str | None
    invoice_date: str | None
    unit_price: str | None
    customer_id: str | None
    country: str | None
    amount: str | None


class Input(Section):
    format: Annotated[str, one_of(*FORMATS)]
    sheet: str | None
    encoding: Annotated[str, AfterValidator(_encoding)]
    csv_delimiter: Annotated[str, AfterValidator(_one_character)]
    columns: Columns
    date_formats: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]

    @model_validator(mode="after")
    def _required_columns(self) -> Input:
        for field in ("invoice_no", "invoice_date", "customer_id"):
            if not getattr(self.columns, field):
                raise ValueError(f"'input.columns.{field}' is required (the source column name)")
        if not (self.columns.quantity and self.columns.unit_price) and not self.columns.amount:
            raise ValueError("'input.columns' needs either 'amount' or both 'quantity' and "
                             "'unit_price'")
        return self


class Refine(Section):
    cancellation_prefix: Annotated[str, Field(min_length=1)]
    max_future_days: Annotated[int, Field(ge=0)]
    earliest_date: Date
    max_abs_quantity: Annotated[int, Field(gt=0)]
    max_abs_unit_price: Positive
    non_product_codes: list[str]


class PurchaseNature(Section):
    bulk_min_items: int
    reseller_min_items: int

    @model_validator(mode="after")
    def _ordered(self) -> PurchaseNature:
        if not 1 < self.bulk_min_items < self.reseller_min_items:
            raise ValueError("'report.purchase_nature' needs 1 < bulk_min_items < "
                             f"reseller_min_items, got {self.bulk_min_items} and "
                             f"{self.reseller_min_items}")
        return self


class Report(Section):
    purchase_nature: PurchaseNature
    growth_months: AtLeast1


class SegmentRule(Section):
    name: str
    r: Scores
    f: Scores


class ValueTier(Section):
    name: str
    m: Scores


class Segment(Section):
    as_of: Date
    windows_days: Annotated[list[AtLeast1], Field(min_length=1)]
    score_accuracy: Annotated[int, Field(ge=100)]
    segments: list[SegmentRule]
    value_tiers: list[ValueTier]

    @model_validator(mode="after")
    def _every_score_once(self) -> Segment:
        owner: dict[tuple[int, int], str] = {}
        for rule in self.segments:
            for r in rule.r:
                for f in rule.f:
                    if (r, f) in owner:
                        raise ValueError(f"'segment.segments': R{r} F{f} is in both "
                                         f"'{owner[(r, f)]}' and '{rule.name}'")
                    owner[(r, f)] = rule.name
        missing = [f"R{r} F{f}" for r in range(1, 6) for f in range(1, 6)
                   if (r, f) not in owner]
        if missing:
            raise ValueError(f"'segment.segments' maps no segment for {', '.join(missing)}")
        tiers: dict[int, str] = {}
        for tier in self.value_tiers:
            for m in tier.m:
                if m in tiers:
                    raise ValueError(f"'segment.value_tiers': M{m} is in both '{tiers[m]}' "
                                     f"and '{tier.name}'")
                tiers[m] = tier.name
        gaps = [f"M{m}" for m in range(1, 6) if m not in tiers]
        if gaps:
            raise ValueError(f"'segment.value_tiers' maps no tier for {', '.join(gaps)}")
        return self


class Cluster(Section):
    features: Annotated[list[Annotated[str, one_of(*CLUSTER_FEATURES)]], Field(min_length=1)]
    algorithm: Annotated[str, one_of(*CLUSTER_ALGORITHMS)]
    k_min: int
    k_max: int
    k: Annotated[int, Field(ge=2)] | None
    resamples: Annotated[int, Field(ge=2)]
    resample_fraction: Annotated[float, _in(0.0, 1.0, "(0, 1]")]
    stability_sample: Annotated[int, Field(ge=100)]
    min_stability: Annotated[float, _in(-1.0, 1.0, "[-1, 1]", "(an adjusted Rand index) ")]
    silhouette_tolerance: Annotated[float, _in(0.0, 2.0, "[0, 2]")]
    seed: int
    max_iter: AtLeast1
    sweep_sample: Annotated[int, Field(ge=100)]

    @model_validator(mode="after")
    def _k_range(self) -> Cluster:
        if not 2 <= self.k_min <= self.k_max:
            raise ValueError("'cluster.k_min' and 'cluster.k_max' need 2 <= k_min <= k_max, "
                             f"got {self.k_min} and {self.k_max}")
        return self


class TierCuts(Section):
    mid: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> TierCuts:
        if not 0 < self.mid < self.high:
            raise ValueError(f"'clv.tier_cuts' needs 0 < mid < high, got mid {self.mid} and "
                             f"high {self.high}")
        return self


class Blend(Section):
    gbt: Annotated[float, Field(ge=0)]
    past_spend_rate: Annotated[float, Field(ge=0)]
    paretonbd_gg: Annotated[float, Field(ge=0)]
    bgnbd_gg: Annotated[float, Field(ge=0)]

    @model_validator(mode="after")
    def _some_weight(self) -> Blend:
        if sum(self.model_dump().values()) <= 0:
            raise ValueError(f"'clv.blend' needs weights of 0 or more, not all 0, got "
                             f"{self.model_dump()}")
        return self


class Bootstrap(Section):
    draws: Annotated[int, Field(ge=0)]
    confidence: Annotated[float, _in(0.5, 1.0, "[0.5, 1)")]
    seed: int
    sample: Annotated[int, Field(ge=100)]


class Gbt(Section):
    max_iter: AtLeast1
    max_depth: AtLeast1
    step_size: Annotated[float, _in(0.0, 1.0, "(0, 1]")]
    min_instances_per_node: AtLeast1
    seed: int


class Clv(Section):
    as_of: Date
    horizon_days: AtLeast1
    origins: AtLeast1
    origin_step_days: AtLeast1
    snapshot_step_days: AtLeast1
    max_snapshots: AtLeast1
    min_history_days: AtLeast1
    training_sample: AtLeast1
    tier_cuts: TierCuts
    blend: Blend
    bootstrap: Bootstrap
    gbt: Gbt


class Drift(Section):
    psi_threshold: Positive
    share_change_threshold: Positive
    min_cluster_ari: Annotated[float, _in(-1.0, 1.0, "[-1, 1]")]
    psi_bins: Annotated[int, Field(ge=2)]


class Dashboard(Section):
    out: str | None
    currency: str
    top_countries: AtLeast1
    top_products: AtLeast1
    top_customers: AtLeast1
    scatter_sample: AtLeast1
    retain_segments: list[str]
    actions: dict[str, str]


class Audience(Section):
    segments: list[str] | None = None
    clusters: list[int] | None = None
    tiers: list[str] | None = None
    min_p_alive: Annotated[float, _in(0.0, 1.0, "[0, 1]")] | None = None


class Export(Section):
    dir: str | None
    format: Annotated[str, one_of("csv", "parquet")]
    single_file_max_rows: AtLeast1


class Mlflow(Section):
    tracking_uri: str | None
    artifact_location: str | None
    experiment: str


class Settings(Section):
    """Every configuration key (``conf/defaults.yaml``)."""

    spark: Spark
    delta: Delta
    input: Input
    refine: Refine
    report: Report
    segment: Segment
    cluster: Cluster
    clv: Clv
    drift: Drift
    dashboard: Dashboard
    audiences: dict[str, Audience]
    export: Export
    mlflow: Mlflow

    @model_validator(mode="after")
    def _names_exist(self) -> Settings:
        names = [s.name for s in self.segment.segments]
        for key, given in (("retain_segments", self.dashboard.retain_segments),
                           ("actions", list(self.dashboard.actions))):
            unknown = [n for n in given if n not in names]
            if unknown:
                raise ValueError(f"'dashboard.{key}' names segments that 'segment.segments' "
                                 f"does not have: {', '.join(unknown)} (segments: "
                                 f"{', '.join(names)})")
        bad = [k for k, v in self.dashboard.actions.items() if not v.strip()]
        if bad:
            raise ValueError(f"'dashboard.actions' needs a text for {', '.join(bad)}")
        tiers = [t.name for t in self.segment.value_tiers]
        for name, spec in self.audiences.items():
            for key, known in (("segments", names), ("tiers", tiers)):
                unknown = [v for v in getattr(spec, key) or [] if v not in known]
                if unknown:
                    raise ValueError(f"'audiences.{name}': unknown {key[:-1]} "
                                     f"{', '.join(map(repr, unknown))} (known: "
                                     f"{', '.join(sorted(known))})")
        return self


def check(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` validated against the schema, as plain dicts and lists (ints given for
    numbers become floats); raises pydantic's ``ValidationError``."""
    return Settings.model_validate(values).model_dump(exclude_unset=True)
