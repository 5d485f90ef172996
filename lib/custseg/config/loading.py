"""Load and validate configuration: packaged defaults, a user YAML file, then --set overrides.

Every key must exist in the defaults; every value is checked before any Spark work starts, so
a typo or a bad value is one clear line (exit 2) rather than a stack trace mid-run.
"""

from __future__ import annotations

import codecs
import copy
import datetime as dt
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from custseg.errors import ConfigError

FIELDS = (
    "invoice_no", "stock_code", "description", "quantity", "invoice_date",
    "unit_price", "customer_id", "country", "amount",
)
FORMATS = ("auto", "xlsx", "csv", "parquet")
_FREE_DICTS = {"spark.conf", "dashboard.actions", "audiences"}
# given whole, so renamed segments can drop old keys
_REPLACED_DICTS = {"dashboard.actions", "audiences"}
_NULLABLE = {"delta.jars_dir", "input.sheet"} | {f"input.columns.{f}" for f in FIELDS}
_NULL_TYPES: dict[str, type] = {
    "spark.remote": str,
    "cluster.k": int, "segment.as_of": str, "clv.as_of": str, "mlflow.tracking_uri": str,
    "mlflow.artifact_location": str, "dashboard.out": str, "refine.earliest_date": str,
    "export.dir": str,
}
_NULLABLE |= set(_NULL_TYPES)
CLUSTER_FEATURES = (
    "recency_days", "frequency", "monetary", "tenure_days", "avg_order_value",
    "distinct_products", "days_between_purchases", "return_rate",
)

CLUSTER_ALGORITHMS = ("kmeans", "bisecting_kmeans", "gaussian_mixture")

Config = dict[str, Any]

# Python codec name -> the charset name Spark's CSV reader accepts.
SPARK_CHARSETS = {
    "utf-8": "utf-8", "iso8859-1": "iso-8859-1", "ascii": "us-ascii", "utf-16": "utf-16",
    "utf-16-be": "utf-16be", "utf-16-le": "utf-16le", "utf-32": "utf-32",
}


def spark_charset(encoding: str) -> str:
    """The Spark CSV charset for an encoding name (``latin-1`` -> ``iso-8859-1``)."""
    return SPARK_CHARSETS[codecs.lookup(encoding).name]


def load_defaults() -> Config:
    """The packaged defaults (conf/defaults.yaml)."""
    text = resources.files("custseg.config").joinpath("defaults.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _read_yaml(path: str) -> Config:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"config file {path}: bad value ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}{where}: not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping of keys")
    return data


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _merge(base: Config, override: Config, source: str, prefix: str = "") -> None:
    for key, value in override.items():
        path = f"{prefix}{key}"
        if prefix.rstrip(".") in _FREE_DICTS:
            base[key] = value
            continue
        if key not in base:
            raise ConfigError(f"{source}: unknown config key '{path}'")
        default = base[key]
        if isinstance(default, dict) and path not in _FREE_DICTS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{path}' must be a mapping, got {value!r}")
            _merge(default, value, source, f"{path}.")
            continue
        if path in _FREE_DICTS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{path}' must be a mapping, got {value!r}")
            if path in _REPLACED_DICTS:
                base[key] = dict(value)
            else:
                default.update(value)
            continue
        if isinstance(value, dt.date):
            value = value.isoformat()
        if value is None and (path in _NULLABLE):
            base[key] = None
            continue
        expected = type(default) if default is not None else _NULL_TYPES.get(path, str)
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value)
        if not ok:
            want = (_type_name(default) if default is not None
                    else f"{_type_name(_NULL_TYPES.get(path, str)())} or null")
            raise ConfigError(f"{source}: '{path}' must be {want}, got {value!r}")
        base[key] = value


def _parse_set(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except (yaml.YAMLError, ValueError):
        value = raw
    return key.strip(), value


def _nest(key: str, value: Any) -> Config:
    out: Config = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def validate(cfg: Config) -> None:
    """Checks beyond types: ranges, choices and required column mappings."""
    if cfg["spark"]["shuffle_partitions"] < 1:
        raise ConfigError("'spark.shuffle_partitions' must be at least 1, "
                          f"got {cfg['spark']['shuffle_partitions']}")
    inp = cfg["input"]
    if inp["format"] not in FORMATS:
        raise ConfigError(f"'input.format' must be one of {', '.join(FORMATS)}, "
                          f"got {inp['format']!r}")
    try:
        known = codecs.lookup(inp["encoding"]).name in SPARK_CHARSETS
    except LookupError:
        known = False
    if not known:
        raise ConfigError(f"'input.encoding' is not a known encoding: {inp['encoding']!r} "
                          "(use utf-8, latin-1, ascii, utf-16 or utf-32)")
    if len(inp["csv_delimiter"]) != 1:
        raise ConfigError("'input.csv_delimiter' must be one character, "
                          f"got {inp['csv_delimiter']!r}")
    formats = inp["date_formats"]
    if not formats or not all(isinstance(f, str) and f for f in formats):
        raise ConfigError("'input.date_formats' must be a non-empty list of date patterns")
    cols = inp["columns"]
    for field in ("invoice_no", "invoice_date", "customer_id"):
        if not cols.get(field):
            raise ConfigError(f"'input.columns.{field}' is required (the source column name)")
    has_qp = bool(cols.get("quantity")) and bool(cols.get("unit_price"))
    if not has_qp and not cols.get("amount"):
        raise ConfigError("'input.columns' needs either 'amount' or both 'quantity' and "
                          "'unit_price'")
    codes = cfg["refine"]["non_product_codes"]
    if not all(isinstance(c, str) for c in codes):
        raise ConfigError("'refine.non_product_codes' must be a list of strings")
    if not cfg["refine"]["cancellation_prefix"]:
        raise ConfigError("'refine.cancellation_prefix' must not be empty")
    _validate_bounds(cfg["refine"])
    _validate_models(cfg)


def _validate_bounds(refine: Config) -> None:
    _check_date(refine["earliest_date"], "refine.earliest_date")
    if refine["max_future_days"] < 0:
        raise ConfigError(f"'refine.max_future_days' must be 0 or more, got "
                          f"{refine['max_future_days']}")
    for key in ("max_abs_quantity", "max_abs_unit_price"):
        if not refine[key] > 0:
            raise ConfigError(f"'refine.{key}' must be positive, got {refine[key]}")


def _score_list(value: Any, where: str) -> list[int]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 5
                       for v in value)):
        raise ConfigError(f"{where} must be a list of scores from 1 to 5, got {value!r}")
    return value


def validate_segments(seg: Config) -> None:
    """Every R-F pair maps to exactly one segment; every M score to exactly one tier."""
    owner: dict[tuple[int, int], str] = {}
    for i, entry in enumerate(seg["segments"]):
        if not isinstance(entry, dict) or set(entry) != {"name", "r", "f"} \
                or not isinstance(entry["name"], str):
            raise ConfigError(f"'segment.segments[{i}]' must be {{name, r, f}}, got {entry!r}")
        for r in _score_list(entry["r"], f"'segment.segments[{i}].r'"):
            for f in _score_list(entry["f"], f"'segment.segments[{i}].f'"):
                if (r, f) in owner:
                    raise ConfigError(f"'segment.segments': R{r} F{f} is in both "
                                      f"'{owner[(r, f)]}' and '{entry['name']}'")
                owner[(r, f)] = entry["name"]
    missing = [f"R{r} F{f}" for r in range(1, 6) for f in range(1, 6) if (r, f) not in owner]
    if missing:
        raise ConfigError(f"'segment.segments' maps no segment for {', '.join(missing)}")
    tiers: dict[int, str] = {}
    for i, entry in enumerate(seg["value_tiers"]):
        if not isinstance(entry, dict) or set(entry) != {"name", "m"}:
            raise ConfigError(f"'segment.value_tiers[{i}]' must be {{name, m}}, got {entry!r}")
        for m in _score_list(entry["m"], f"'segment.value_tiers[{i}].m'"):
            if m in tiers:
                raise ConfigError(f"'segment.value_tiers': M{m} is in both '{tiers[m]}' and "
                                  f"'{entry['name']}'")
            tiers[m] = entry["name"]
    if len(tiers) != 5:
        gaps = [f"M{m}" for m in range(1, 6) if m not in tiers]
        raise ConfigError(f"'segment.value_tiers' maps no tier for {', '.join(gaps)}")


def _check_date(value: str | None, key: str) -> None:
    if value is not None:
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"'{key}' must be a date yyyy-mm-dd, got {value!r}") from None


def _validate_models(cfg: Config) -> None:
    seg = cfg["segment"]
    _check_date(seg["as_of"], "segment.as_of")
    windows = seg["windows_days"]
    if not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in windows):
        raise ConfigError(f"'segment.windows_days' must be positive whole days, got {windows!r}")
    if seg["score_accuracy"] < 100:
        raise ConfigError("'segment.score_accuracy' must be at least 100")
    validate_segments(seg)
    cl = cfg["cluster"]
    unknown = [f for f in cl["features"] if f not in CLUSTER_FEATURES]
    if not cl["features"] or unknown:
        raise ConfigError(f"'cluster.features' must be a non-empty list from "
                          f"{', '.join(CLUSTER_FEATURES)}; unknown: {unknown}")
    if not 2 <= cl["k_min"] <= cl["k_max"]:
        raise ConfigError(f"'cluster.k_min' and 'cluster.k_max' need 2 <= k_min <= k_max, got "
                          f"{cl['k_min']} and {cl['k_max']}")
    if cl["k"] is not None and cl["k"] < 2:
        raise ConfigError(f"'cluster.k' must be at least 2, got {cl['k']}")
    if cl["max_iter"] < 1:
        raise ConfigError("'cluster.max_iter' must be at least 1")
    if cl["algorithm"] not in CLUSTER_ALGORITHMS:
        raise ConfigError(f"'cluster.algorithm' must be one of {', '.join(CLUSTER_ALGORITHMS)}, "
                          f"got {cl['algorithm']!r}")
    if cl["resamples"] < 2:
        raise ConfigError(f"'cluster.resamples' must be at least 2, got {cl['resamples']}")
    if not 0 < cl["resample_fraction"] <= 1:
        raise ConfigError(f"'cluster.resample_fraction' must be in (0, 1], got "
                          f"{cl['resample_fraction']}")
    if not -1 <= cl["min_stability"] <= 1:
        raise ConfigError(f"'cluster.min_stability' (an adjusted Rand index) must be in "
                          f"[-1, 1], got {cl['min_stability']}")
    if not 0 <= cl["silhouette_tolerance"] <= 2:
        raise ConfigError(f"'cluster.silhouette_tolerance' must be in [0, 2], got "
                          f"{cl['silhouette_tolerance']}")
    if cl["stability_sample"] < 100:
        raise ConfigError(f"'cluster.stability_sample' must be at least 100, got "
                          f"{cl['stability_sample']}")
    if cl["sweep_sample"] < 100:
        raise ConfigError(f"'cluster.sweep_sample' must be at least 100, got "
                          f"{cl['sweep_sample']}")
    _validate_clv(cfg["clv"])
    _validate_outputs(cfg)
    _validate_audiences(cfg)


AUDIENCE_KEYS = {"segments", "clusters", "tiers", "min_p_alive"}


def _validate_audiences(cfg: Config) -> None:
    segments = {s["name"] for s in cfg["segment"]["segments"]}
    tiers = {t["name"] for t in cfg["segment"]["value_tiers"]}
    for name, spec in cfg["audiences"].items():
        where = f"'audiences.{name}'"
        if not isinstance(spec, dict) or set(spec) - AUDIENCE_KEYS:
            raise ConfigError(f"{where} must be a mapping with keys from "
                              f"{', '.join(sorted(AUDIENCE_KEYS))}, got {spec!r}")
        for key, known in (("segments", segments), ("tiers", tiers)):
            unknown = [v for v in spec.get(key) or [] if v not in known]
            if unknown:
                raise ConfigError(f"{where}: unknown {key[:-1]} {', '.join(map(repr, unknown))}"
                                  f" (known: {', '.join(sorted(known))})")
        if not all(isinstance(c, int) for c in spec.get("clusters") or []):
            raise ConfigError(f"{where}: clusters must be cluster numbers")
        p = spec.get("min_p_alive")
        if p is not None and not (isinstance(p, (int, float)) and 0 <= p <= 1):
            raise ConfigError(f"{where}: min_p_alive must be between 0 and 1, got {p!r}")
    if cfg["export"]["format"] not in ("csv", "parquet"):
        raise ConfigError(f"'export.format' must be csv or parquet, got "
                          f"{cfg['export']['format']!r}")
    if cfg["export"]["single_file_max_rows"] < 1:
        raise ConfigError("'export.single_file_max_rows' must be at least 1")


def _validate_outputs(cfg: Config) -> None:
    nature = cfg["report"]["purchase_nature"]
    if set(nature) != {"bulk_min_items", "reseller_min_items"} or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in nature.values()):
        raise ConfigError("'report.purchase_nature' must be {bulk_min_items: units, "
                          f"reseller_min_items: units}}, got {nature!r}")
    if not 1 < nature["bulk_min_items"] < nature["reseller_min_items"]:
        raise ConfigError("'report.purchase_nature' needs 1 < bulk_min_items < "
                          f"reseller_min_items, got {nature['bulk_min_items']} and "
                          f"{nature['reseller_min_items']}")
    if cfg["report"]["growth_months"] < 1:
        raise ConfigError("'report.growth_months' must be at least 1")
    drift = cfg["drift"]
    for key in ("psi_threshold", "share_change_threshold"):
        if drift[key] <= 0:
            raise ConfigError(f"'drift.{key}' must be positive, got {drift[key]}")
    if not -1 <= drift["min_cluster_ari"] <= 1:
        raise ConfigError(f"'drift.min_cluster_ari' must be in [-1, 1], got "
                          f"{drift['min_cluster_ari']}")
    if drift["psi_bins"] < 2:
        raise ConfigError(f"'drift.psi_bins' must be at least 2, got {drift['psi_bins']}")
    dash = cfg["dashboard"]
    for key in ("top_countries", "top_products", "top_customers", "scatter_sample"):
        if dash[key] < 1:
            raise ConfigError(f"'dashboard.{key}' must be at least 1, got {dash[key]}")
    names = [s["name"] for s in cfg["segment"]["segments"]]
    for key, given in (("retain_segments", dash["retain_segments"]),
                       ("actions", list(dash["actions"]))):
        unknown = [n for n in given if n not in names]
        if unknown:
            raise ConfigError(f"'dashboard.{key}' names segments that 'segment.segments' does "
                              f"not have: {', '.join(map(str, unknown))} (segments: "
                              f"{', '.join(names)})")
    bad = [k for k, v in dash["actions"].items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise ConfigError(f"'dashboard.actions' needs a text for {', '.join(bad)}")


def _validate_clv(clv: Config) -> None:
    _check_date(clv["as_of"], "clv.as_of")
    for key in ("horizon_days", "origins", "origin_step_days", "snapshot_step_days",
                "max_snapshots", "min_history_days", "training_sample"):
        if clv[key] < 1:
            raise ConfigError(f"'clv.{key}' must be at least 1, got {clv[key]}")
    weights = clv["blend"]
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ConfigError(f"'clv.blend' needs weights of 0 or more, not all 0, got {weights}")
    boot = clv["bootstrap"]
    if boot["draws"] < 0 or boot["sample"] < 100:
        raise ConfigError("'clv.bootstrap' needs draws >= 0 and sample >= 100, got "
                          f"{boot['draws']} and {boot['sample']}")
    if not 0.5 <= boot["confidence"] < 1.0:
        raise ConfigError(f"'clv.bootstrap.confidence' must be in [0.5, 1), got "
                          f"{boot['confidence']}")
    cuts = clv["tier_cuts"]
    if set(cuts) != {"mid", "high"} or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in cuts.values()):
        raise ConfigError(f"'clv.tier_cuts' must be {{mid: amount, high: amount}}, got {cuts!r}")
    if not 0 < cuts["mid"] < cuts["high"]:
        raise ConfigError(f"'clv.tier_cuts' needs 0 < mid < high, got mid {cuts['mid']} and "
                          f"high {cuts['high']}")
    gbt = clv["gbt"]
    for key in ("max_iter", "max_depth", "min_instances_per_node"):
        if gbt[key] < 1:
            raise ConfigError(f"'clv.gbt.{key}' must be at least 1, got {gbt[key]}")
    if not 0 < gbt["step_size"] <= 1:
        raise ConfigError(f"'clv.gbt.step_size' must be in (0, 1], got {gbt['step_size']}")


def load_config(conf_file: str | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then ``key=value`` overrides; validated."""
    cfg = copy.deepcopy(load_defaults())
    if conf_file:
        _merge(cfg, _read_yaml(conf_file), f"config file {conf_file}")
    for item in overrides or []:
        key, value = _parse_set(item)
        _merge(cfg, _nest(key, value), f"--set {item}")
    validate(cfg)
    return cfg
