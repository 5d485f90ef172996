"""Where Spark's and MLflow's own messages go: a run's log file, or the console (--verbose).

The console a user watches keeps custseg's stage lines. The JVM's log is sent to the file by
``session.build_spark``; MLflow (with Alembic and SQLAlchemy, which it drives) configures its
loggers when it is imported, so ``to_file`` is applied again by ``tracking.configure``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

_FILE: list[str] = []  # the run's log file, once routed
LOGGERS = ("mlflow", "alembic", "sqlalchemy.engine", "huey")


def log_file(lakehouse_root: str, run_id: str) -> str:
    """``<lakehouse>/_custseg/logs/<run id>.log`` for a local lakehouse; for a remote one, or
    a local one that cannot be written (the stage then says why), the same name under
    ``~/.cache/custseg/logs`` (the JVM writes its log to a local file)."""
    from custseg.io.paths import is_uri, normalise_root, user_cache

    cache = str(user_cache("logs"))
    folder = cache if is_uri(lakehouse_root) else os.path.join(
        normalise_root(lakehouse_root), "_custseg", "logs")
    try:
        os.makedirs(folder, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(folder)
    except OSError:
        folder = cache
        os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{run_id}.log")


def route(path: str) -> None:
    """From now on, MLflow's messages go to ``path``."""
    _FILE[:] = [path]
    to_file()


@contextlib.contextmanager
def notices_to_file() -> Iterator[None]:
    """Inside the block, what is written to stderr goes to the routed file: MLflow prints its
    registry notices ("Successfully registered model ...", said again by custseg's own lines)
    straight to stderr, not through a logger."""
    if not _FILE:
        yield
        return
    with open(_FILE[0], "a", encoding="utf-8") as fh, contextlib.redirect_stderr(fh):
        yield


def to_file() -> None:
    """Point MLflow's loggers (and those of the libraries it drives) at the routed file."""
    if not _FILE:
        return
    handler = logging.FileHandler(_FILE[0], encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for old in logger.handlers:
            old.close()
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO if name == "mlflow" else logging.WARNING)
