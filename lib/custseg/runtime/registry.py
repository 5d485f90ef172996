"""MLflow at the edge: where runs and registered models live, and the champion alias.

Embedded default: a SQLite tracking and registry database and an artifact folder under the
lakehouse; ``mlflow.tracking_uri`` points at a tracking server instead.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from custseg.config import Config
from custseg.errors import ConfigError
from custseg.io import lakehouse, storage
from custseg.runtime import logs
from custseg.runtime.session import active_is_classic

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel

CHAMPION = "champion"
# What a logged Spark model needs to load again: pyspark and what MLflow's own loader imports.
MODEL_PACKAGES = ("mlflow", "numpy", "pandas", "pyspark", "scipy")


_warming: list[threading.Thread] = []


def warm_up(root: str, cfg: Config) -> None:
    """Import MLflow and open (on a new lakehouse, create) its store in a background thread,
    while a stage that does not use MLflow runs: about 4 s on 2 cores that the first stage
    logging to MLflow would otherwise wait for. ``configure`` and ``finish_warm_up`` wait for
    it; its errors are left for ``configure`` to raise in the stage."""
    def run() -> None:
        try:
            _configure(root, cfg)
        except Exception:  # noqa: BLE001 - raised again by the stage's own configure
            pass

    thread = threading.Thread(target=run, name="custseg-mlflow-warm-up")
    _warming.append(thread)
    thread.start()


def finish_warm_up() -> None:
    """Wait for ``warm_up``: a store half made when the process (or its lock) ends would be
    left broken."""
    while _warming:
        _warming.pop().join()


def configure(root: str, cfg: Config) -> str:
    """Point MLflow at the configured store and return the experiment id."""
    finish_warm_up()
    return _configure(root, cfg)


def _configure(root: str, cfg: Config) -> str:
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
    _map_packages()
    return experiment_id


def _map_packages() -> None:
    """Build MLflow's map of installed packages, which every model save checks its pip
    requirements against, once here (0.3 s; in the warm-up thread when there is one): saves
    side by side that find it missing each build it, about 2.8 s more for five models on 2
    cores. Internal to MLflow (pinned 3.17.x); it builds the map only while it is unset."""
    from mlflow.utils import requirements_utils

    requirements_utils._init_modules_to_packages_map()


def _requirements() -> list[str]:
    """The installed versions of ``MODEL_PACKAGES``, given rather than inferred: inference
    imports the model in a subprocess, about 18 s a model on 2 cores."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in MODEL_PACKAGES]


def _staging() -> str:
    """A fresh folder in MLflow's DFS temp dir (``MLFLOW_DFS_TMP``, default /tmp/mlflow): a
    place the Spark Connect server writes and reads models and this process reaches too."""
    import uuid

    from mlflow.environment_variables import MLFLOW_DFS_TMP

    return f"{MLFLOW_DFS_TMP.get().rstrip('/')}/custseg-{uuid.uuid4().hex}"


def save_spark_model(model: PipelineModel, path: str) -> None:
    """Save a fitted Spark ML model as an MLflow model folder at local ``path``.

    ``mlflow.spark`` copies the saved model out of Spark through the JVM, which a Spark Connect
    client does not have: there the server saves it to a staging folder, this process copies it
    into ``path/sparkml`` and MLflow's own metadata writer adds the rest, so the folder is the
    same either way.
    """
    import mlflow.spark
    from mlflow.models import Model

    if active_is_classic():
        mlflow.spark.save_model(model, path, pip_requirements=_requirements())
        return
    staging = _staging()
    model.save(staging)
    try:
        storage.copy_tree(staging, f"{path}/sparkml")
    finally:
        storage.delete_tree(staging)
    # internal to mlflow.spark (pinned 3.17.x): the MLmodel, conda and pip files save_model writes
    mlflow.spark._save_model_metadata(path, model, Model(), conda_env=None, code_paths=None,
                                      pip_requirements=_requirements())


def load_spark_model(model_uri: str) -> PipelineModel:
    """A logged or registered Spark ML model, through the classic session or Spark Connect."""
    import mlflow.artifacts
    import mlflow.spark
    from pyspark.ml import PipelineModel

    if active_is_classic():
        with logs.notices_to_file():
            return mlflow.spark.load_model(model_uri)
    local = mlflow.artifacts.download_artifacts(model_uri)
    staging = _staging()
    storage.copy_tree(f"{local}/sparkml", staging)
    try:
        return PipelineModel.load(staging)
    finally:
        storage.delete_tree(staging)


def log_spark_models(models: dict[str, PipelineModel], prefix: str) -> dict[str, str]:
    """Log several fitted Spark ML models in the active run, saved side by side (the saves
    are mostly Spark jobs), each under ``{prefix}-{key}``; return their model URIs."""
    import tempfile

    import mlflow

    from custseg.runtime.threads import run_all

    run_id = mlflow.active_run().info.run_id
    with tempfile.TemporaryDirectory(prefix="custseg-models-") as tmp:
        paths = {k: f"{tmp}/{prefix}-{k}" for k in models}
        run_all([lambda k=k, m=m: save_spark_model(m, paths[k]) for k, m in models.items()])
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
