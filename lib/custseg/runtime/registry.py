"""MLflow at the edge: where runs and registered models live, and the champion alias.

Embedded default: a SQLite tracking and registry database and an artifact folder under the
lakehouse; ``mlflow.tracking_uri`` points at a tracking server instead.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from custseg.config import Config
from custseg.errors import ConfigError
from custseg.io import lakehouse
from custseg.runtime import logs

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo
    from pyspark.ml import PipelineModel

CHAMPION = "champion"
# What a logged Spark model needs to load again: pyspark and what MLflow's own loader imports.
MODEL_PACKAGES = ("mlflow", "numpy", "pandas", "pyspark", "scipy")


def configure(root: str, cfg: Config) -> str:
    """Point MLflow at the configured store and return the experiment id."""
    import mlflow

    logs.to_file()
    ml = cfg["mlflow"]
    base = lakehouse.normalise_root(root)
    uri = ml["tracking_uri"]
    artifacts = ml["artifact_location"]
    if uri is None:
        if "://" in base:
            raise ConfigError(f"lakehouse {base} is on remote storage: set mlflow.tracking_uri "
                              "(a tracking server) for MLflow")
        os.makedirs(f"{base}/mlflow", exist_ok=True)
        uri = f"sqlite:///{base}/mlflow/mlflow.db"
        artifacts = artifacts or f"file://{base}/mlflow/artifacts"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.get_experiment_by_name(ml["experiment"])
    if experiment is None:
        experiment_id = mlflow.create_experiment(ml["experiment"], artifact_location=artifacts)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def log_spark_model(model: PipelineModel, artifact_path: str,
                    registered_model_name: str | None = None) -> ModelInfo:
    """Log (and register, given a name) a fitted Spark ML model in the active run; return
    MLflow's ModelInfo.

    The requirements are the installed versions of ``MODEL_PACKAGES``, given rather than
    inferred: inference imports the model in a subprocess, about 18 s a model on 2 cores.
    """
    from importlib.metadata import version

    import mlflow.spark

    requirements = [f"{p}=={version(p)}" for p in MODEL_PACKAGES]
    with logs.notices_to_file():
        return mlflow.spark.log_model(model, artifact_path=artifact_path,
                                      registered_model_name=registered_model_name,
                                      pip_requirements=requirements)


def log_spark_models(models: dict[str, PipelineModel], prefix: str) -> dict[str, str]:
    """Log several fitted Spark ML models in the active run, saved side by side (the saves
    are mostly Spark jobs), each under ``{prefix}-{key}``; return their model URIs."""
    import tempfile
    from importlib.metadata import version

    import mlflow
    import mlflow.spark

    from custseg.runtime.threads import run_all

    requirements = [f"{p}=={version(p)}" for p in MODEL_PACKAGES]
    run_id = mlflow.active_run().info.run_id
    with tempfile.TemporaryDirectory(prefix="custseg-models-") as tmp:
        paths = {k: f"{tmp}/{prefix}-{k}" for k in models}
        run_all([lambda k=k, m=m: mlflow.spark.save_model(m, paths[k],
                                                          pip_requirements=requirements)
                 for k, m in models.items()])
        for k, path in paths.items():
            mlflow.log_artifacts(path, artifact_path=f"{prefix}-{k}")
    return {k: f"runs:/{run_id}/{prefix}-{k}" for k in models}


def register(model_uri: str, name: str, tags: dict[str, object]) -> str:
    """Register a logged model under ``name`` with tags; return the new version.

    One logged model may be registered under several names (a customer-value model is both a
    spend and a tier model) without saving it twice.
    """
    import mlflow

    with logs.notices_to_file():
        version = mlflow.register_model(model_uri, name,
                                        tags={k: str(v) for k, v in tags.items()})
    return str(version.version)


def version_tags(name: str, version: str) -> dict[str, str]:
    """The tags of one registered version."""
    from mlflow import MlflowClient

    return dict(MlflowClient().get_model_version(name, str(version)).tags)


def find_version(name: str, tags: dict[str, str]) -> str | None:
    """The newest registered version of ``name`` carrying all of ``tags``."""
    from mlflow import MlflowClient

    versions = MlflowClient().search_model_versions(f"name = '{name}'")
    hits = [int(v.version) for v in versions
            if all(v.tags.get(k) == str(val) for k, val in tags.items())]
    return str(max(hits)) if hits else None


def set_champion(name: str, version: str | int) -> None:
    """Point the ``champion`` alias of a registered model at a version."""
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(name, CHAMPION, str(version))


def set_version_tag(name: str, version: str | int, key: str, value: str) -> None:
    """Tag one registered model version (for example ``needs_retraining``)."""
    from mlflow import MlflowClient

    MlflowClient().set_model_version_tag(name, str(version), key, value)


def champion_version(name: str) -> str | None:
    """The version the ``champion`` alias points at, or None."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def version_with_tag(name: str, key: str, value: str) -> str | None:
    """The newest registered version of ``name`` whose tag ``key`` equals ``value``."""
    return find_version(name, {key: value})


def list_models() -> list[dict]:
    """Every registered version: name, version, champion or not, creation time, run, tags."""
    from mlflow import MlflowClient

    client = MlflowClient()
    out = []
    for model in client.search_registered_models():
        champion = model.aliases.get(CHAMPION) if model.aliases else None
        for v in client.search_model_versions(f"name = '{model.name}'"):
            out.append({"name": model.name, "version": str(v.version),
                        "champion": str(v.version) == str(champion),
                        "created": v.creation_timestamp, "run_id": v.run_id,
                        "tags": dict(v.tags)})
    return sorted(out, key=lambda r: (r["name"], int(r["version"])))


def rollback(name: str, version: str) -> str | None:
    """Point ``champion`` at an existing version; returns the version it pointed at before."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        client.get_model_version(name, str(version))
    except MlflowException:
        known = sorted({r["version"] for r in list_models() if r["name"] == name}, key=int)
        raise ConfigError(f"{name} has no version {version}"
                          + (f" (versions: {', '.join(known)})" if known else
                             " (no such registered model)")) from None
    before = champion_version(name)
    set_champion(name, version)
    return None if before is None else str(before)
