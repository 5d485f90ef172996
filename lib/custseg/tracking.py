"""MLflow at the edge: where runs and registered models live, and the champion alias.

Embedded default: a SQLite tracking and registry database and an artifact folder under the
lakehouse; ``mlflow.tracking_uri`` points at a tracking server instead.
"""

from __future__ import annotations

import os

from custseg import lakehouse
from custseg.config import Config
from custseg.errors import ConfigError

CHAMPION = "champion"


def configure(root: str, cfg: Config) -> str:
    """Point MLflow at the configured store and return the experiment id."""
    import mlflow

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


def set_champion(name: str, version: str | int) -> None:
    """Point the ``champion`` alias of a registered model at a version."""
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(name, CHAMPION, str(version))


def champion_version(name: str) -> str | None:
    """The version the ``champion`` alias points at, or None."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient().get_model_version_by_alias(name, CHAMPION).version
    except MlflowException:
        return None
