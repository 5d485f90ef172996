"""Lakehouse locations: local folders or URIs, with no Spark needed to name them."""

from __future__ import annotations

import os
import re
from pathlib import Path

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:/")


def is_uri(path: str) -> bool:
    """True for a URI with a scheme (s3a://, gs://, dbfs:/), False for a local path."""
    return bool(_SCHEME.match(path))


def user_cache(name: str) -> Path:
    """``~/.cache/custseg/<name>``: what custseg keeps on this machine between runs."""
    return Path.home() / ".cache" / "custseg" / name


def normalise_root(lakehouse: str) -> str:
    """Absolute local path, or a URI (s3a://, gs://, abfss://, dbfs:/) left as given."""
    if is_uri(lakehouse):
        return lakehouse.rstrip("/")
    return os.path.abspath(lakehouse)


def table_path(lakehouse: str, layer: str, name: str) -> str:
    """``<lakehouse>/<layer>/<name>``."""
    return f"{normalise_root(lakehouse)}/{layer}/{name}"
