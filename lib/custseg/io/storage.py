"""Files beside the Delta tables (the run lock, the dashboard page, a remote input's listing, a
table's ``_delta_log`` listing and latest commit) through one interface, wherever the lakehouse
lives.

A local path uses the standard library. A URI goes to ``pyarrow.fs`` with the same code under a
classic session and under Spark Connect (no py4j): Hadoop's scheme names are mapped to its own
(``s3a://`` to S3, ``abfss://`` to Azure, ``dbfs:/`` to the ``/dbfs`` mount), and an S3 endpoint
or keys set for Spark (``spark.hadoop.fs.s3a.*``) are passed on, so a MinIO or other
S3-compatible lakehouse is reached with the settings its tables are read with.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Protocol

from custseg.io.paths import is_uri


class Storage(Protocol):
    """What custseg does with a file outside a table."""

    def exists(self, path: str) -> bool: ...
    def read_text(self, path: str) -> str | None: ...
    def create(self, path: str, text: str) -> bool: ...
    def write(self, path: str, text: str) -> None: ...
    def delete(self, path: str) -> None: ...
    def files(self, path: str) -> list[tuple[str, int, int]]: ...


class LocalStorage:
    """Local files. ``create`` is atomic: the text is written aside and hard-linked into
    place, so a reader never sees half of it."""

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def read_text(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def create(self, path: str, text: str) -> bool:
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        fd, aside = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.link(aside, path)
        except FileExistsError:
            return False
        except OSError:  # a mount without hard links: exclusive create, then the text
            try:
                out = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(out, "w", encoding="utf-8") as fh:
                fh.write(text)
        finally:
            os.remove(aside)
        return True

    def write(self, path: str, text: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        aside = f"{path}.tmp-{os.getpid()}"
        with open(aside, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(aside, path)

    def delete(self, path: str) -> None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass

    def files(self, path: str) -> list[tuple[str, int, int]]:
        if os.path.isfile(path):
            found = [path]
        else:
            found = [os.path.join(d, f) for d, _, names in os.walk(path) for f in names]
        return sorted((f, os.path.getsize(f), int(os.path.getmtime(f) * 1000))
                      for f in found)


_S3A_OPTIONS = {"endpoint_override": "endpoint", "access_key": "access.key",
                "secret_key": "secret.key", "region": "endpoint.region"}


def _hadoop_setting(spark: Any, key: str) -> str | None:
    """A ``spark.hadoop.*`` setting of the session (public ``spark.conf``), None when unset."""
    if spark is None:
        return None
    try:
        value = spark.conf.get(f"spark.hadoop.{key}", None)
    except Exception:  # a stopped or unreachable session: pyarrow's own defaults apply
        return None
    return value or None


def arrow_fs(path: str, spark: Any = None) -> tuple[Any, str]:
    """The ``pyarrow.fs`` file system that reaches a URI, and the path inside it."""
    from pyarrow import fs

    scheme, _, rest = path.partition(":")
    scheme = scheme.lower()
    if scheme == "dbfs":
        return fs.LocalFileSystem(), "/dbfs/" + rest.lstrip("/")
    if scheme in ("s3", "s3a", "s3n"):
        inner = rest.lstrip("/")
        options = {name: value for name, key in _S3A_OPTIONS.items()
                   if (value := _hadoop_setting(spark, f"fs.s3a.{key}"))}
        if options:
            return fs.S3FileSystem(**options), inner
        return fs.FileSystem.from_uri(f"s3://{inner}")
    return fs.FileSystem.from_uri(path)


class ArrowStorage:
    """Files at a URI through ``pyarrow.fs`` (s3/s3a, gs, abfs/abfss, hdfs, dbfs, file).

    Object stores have no exclusive create here, so ``create`` checks, writes, waits ``settle``
    seconds and reads the file back: of two runs that both found no file, the one whose text
    is not there backs off. Two writers can still both win only if one of them takes longer
    than ``settle`` between its check and its write.
    """

    def __init__(self, spark: Any = None, settle: float = 1.0) -> None:
        self.spark = spark
        self.settle = settle

    def _fs(self, path: str) -> tuple[Any, str]:
        return arrow_fs(path, self.spark)

    def exists(self, path: str) -> bool:
        from pyarrow import fs

        filesystem, inner = self._fs(path)
        return filesystem.get_file_info(inner).type != fs.FileType.NotFound

    def read_text(self, path: str) -> str | None:
        if not self.exists(path):
            return None
        filesystem, inner = self._fs(path)
        with filesystem.open_input_stream(inner) as fh:
            return fh.read().decode("utf-8")

    def create(self, path: str, text: str) -> bool:
        if self.exists(path):
            return False
        self.write(path, text)
        time.sleep(self.settle)  # bounded: lets a concurrent writer's text land before the check
        return self.read_text(path) == text

    def write(self, path: str, text: str) -> None:
        filesystem, inner = self._fs(path)
        filesystem.create_dir(inner.rsplit("/", 1)[0], recursive=True)
        with filesystem.open_output_stream(inner) as fh:
            fh.write(text.encode("utf-8"))

    def delete(self, path: str) -> None:
        if self.exists(path):
            filesystem, inner = self._fs(path)
            filesystem.delete_file(inner)

    def files(self, path: str) -> list[tuple[str, int, int]]:
        """Every file at or below ``path``: (URI as ``path`` spells it, size, mtime in ms); none
        when nothing is there, as for a local path."""
        from pyarrow import fs

        filesystem, inner = self._fs(path)
        info = filesystem.get_file_info(inner)
        found = [info] if info.type == fs.FileType.File else [
            i for i in filesystem.get_file_info(
                fs.FileSelector(inner, recursive=True, allow_not_found=True))
            if i.type == fs.FileType.File]
        base, cut = path.rstrip("/"), len(inner.rstrip("/"))
        return sorted((base + i.path[cut:], i.size, int(i.mtime_ns // 1_000_000))
                      for i in found)


def copy_tree(src: str, dst: str) -> None:
    """Copy a folder with everything in it, between any two places ``pyarrow.fs`` reaches
    (local paths or URIs): how a Spark Connect client moves a model the server saved."""
    from pyarrow import fs

    source, src_inner = arrow_fs(src)
    target, dst_inner = arrow_fs(dst)
    fs.copy_files(src_inner, dst_inner, source_filesystem=source, destination_filesystem=target)


def delete_tree(path: str) -> None:
    """Delete a folder with everything in it (a local path or a URI)."""
    filesystem, inner = arrow_fs(path)
    filesystem.delete_dir(inner)


def for_path(path: str, spark: Any = None) -> Storage:
    """The storage that reaches ``path``: the standard library for a local path, else pyarrow."""
    return ArrowStorage(spark) if is_uri(path) else LocalStorage()


@dataclass
class File:
    """One path on its storage."""

    path: str
    store: Storage

    @classmethod
    def at(cls, path: str, spark: Any = None) -> File:
        return cls(path, for_path(path, spark))

    def create(self, text: str) -> bool:
        """Write ``text`` unless the file exists; False when it did."""
        return self.store.create(self.path, text)

    def read(self) -> str | None:
        return self.store.read_text(self.path)

    def write(self, text: str) -> None:
        self.store.write(self.path, text)

    def delete(self) -> None:
        self.store.delete(self.path)
