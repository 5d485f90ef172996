"""Files beside the Delta tables (the run lock, the dashboard page, a remote input's listing)
through one interface, wherever the lakehouse lives.

A local path uses the standard library. A URI goes to the Hadoop FileSystem of a classic Spark
session, so it sees the connectors and credentials the tables are read with (s3a, gs, abfss,
dbfs); with no classic session (Spark Connect has no JVM handle) it goes to ``pyarrow.fs``,
which reaches s3, gs, abfs, hdfs and file URIs with its own credentials.
"""

from __future__ import annotations

import os
import tempfile
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


class HadoopStorage:
    """Any Hadoop FileSystem, through a classic session's JVM. The one place custseg touches
    py4j: Spark Connect sessions have no JVM and use ``ArrowStorage`` instead.
    ``create(overwrite=false)`` is atomic on HDFS and on stores with conditional writes."""

    def __init__(self, spark: Any) -> None:
        self.jvm = spark.sparkContext._jvm  # classic only: for_path picks ArrowStorage for Connect
        self.conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _fs(self, path: str) -> tuple[Any, Any]:
        jpath = self.jvm.org.apache.hadoop.fs.Path(path)
        return jpath, jpath.getFileSystem(self.conf)

    def exists(self, path: str) -> bool:
        jpath, fs = self._fs(path)
        return bool(fs.exists(jpath))

    def read_text(self, path: str) -> str | None:
        jpath, fs = self._fs(path)
        if not fs.exists(jpath):
            return None
        stream = fs.open(jpath)
        reader = self.jvm.java.io.BufferedReader(
            self.jvm.java.io.InputStreamReader(stream, "UTF-8"))
        lines = []
        line = reader.readLine()
        while line is not None:
            lines.append(line)
            line = reader.readLine()
        reader.close()
        return "\n".join(lines)

    def _put(self, path: str, text: str, overwrite: bool) -> None:
        jpath, fs = self._fs(path)
        stream = fs.create(jpath, overwrite)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()

    def create(self, path: str, text: str) -> bool:
        try:
            self._put(path, text, False)
        except Exception as exc:  # FileAlreadyExistsException arrives as a Py4J error
            if "AlreadyExists" in str(exc) or self.exists(path):
                return False
            raise
        return True

    def write(self, path: str, text: str) -> None:
        self._put(path, text, True)

    def delete(self, path: str) -> None:
        jpath, fs = self._fs(path)
        fs.delete(jpath, False)

    def files(self, path: str) -> list[tuple[str, int, int]]:
        jpath, fs = self._fs(path)
        it = fs.listFiles(jpath, True)
        out = []
        while it.hasNext():
            st = it.next()
            out.append((st.getPath().toString(), st.getLen(), st.getModificationTime()))
        return sorted(out)


class ArrowStorage:
    """Remote files through ``pyarrow.fs`` (s3, gs, abfs, hdfs, file URIs). Its ``create`` is
    check-then-write: exclusive only where one writer runs at a time."""

    @staticmethod
    def _fs(path: str) -> tuple[Any, str]:
        from pyarrow import fs

        return fs.FileSystem.from_uri(path)

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
        return True

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
        from pyarrow import fs

        filesystem, inner = self._fs(path)
        info = filesystem.get_file_info(inner)
        found = [info] if info.type == fs.FileType.File else [
            i for i in filesystem.get_file_info(fs.FileSelector(inner, recursive=True))
            if i.type == fs.FileType.File]
        return sorted((i.path, i.size, int(i.mtime_ns // 1_000_000)) for i in found)


def copy_tree(src: str, dst: str) -> None:
    """Copy a folder with everything in it, between any two places ``pyarrow.fs`` reaches
    (local paths or URIs): how a Spark Connect client moves a model the server saved."""
    from pyarrow import fs

    fs.copy_files(src, dst)


def delete_tree(path: str) -> None:
    """Delete a folder with everything in it (a local path or a URI)."""
    filesystem, inner = ArrowStorage._fs(path)
    filesystem.delete_dir(inner)


def for_path(path: str, spark: Any = None) -> Storage:
    """The storage that reaches ``path``: local, a classic session's Hadoop FS, or pyarrow."""
    if not is_uri(path):
        return LocalStorage()
    from custseg.runtime.session import is_classic

    return HadoopStorage(spark) if is_classic(spark) else ArrowStorage()


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
