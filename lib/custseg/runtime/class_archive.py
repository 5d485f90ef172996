"""The driver JVM's classes, recorded once in a class-data-sharing archive and mapped by the
JVMs custseg starts afterwards.

A new driver JVM loads, verifies and links some 34,000 classes (Spark, Scala, Delta, MLlib)
in a pipeline run, about 24 s of its time on a small run. Mapped from a dynamic CDS archive
(JDK 13+, JEP 350), the 15,000 to 19,000 of them that come from jar files are ready at once:
about 13 s of class loading, and the run ends some 14 s sooner (docs/benchmarks.md,
2026-12-02). Nothing a run computes changes: the same classes run, from a file the JVM made.

``custseg run`` records the archive when there is none for this JDK and these jars: its JVM
writes the classes it loaded when it exits (about 20 s, once per machine), under a temporary
name, and the file takes its final name only after a successful run. The name carries a digest
of the JDK and the jars, and the JVM itself ignores an archive that does not match them (an
archive only speeds up; it is never required). ``spark-submit.sh`` maps it too, when the
driver runs on this machine (``submit_options``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from custseg.io.paths import user_cache

# the JVM's own notes on the archive (a jar it skips, an archive it cannot use) would reach
# the console; a missing or mismatched archive costs speed only
QUIET = "-Xlog:cds*=off"
# options that show the user runs their own class sharing: custseg adds none then
_USER_SHARING = ("-Xshare", "SharedArchiveFile", "ArchiveClassesAtExit")
_STALE_SECONDS = 600


def archive_dir() -> Path:
    """``$CUSTSEG_CDS_DIR`` or ``~/.cache/custseg/cds``."""
    env = os.environ.get("CUSTSEG_CDS_DIR")
    return Path(env) if env else user_cache("cds")


def _java() -> str | None:
    """The java that spark-submit runs: ``$JAVA_HOME/bin/java``, else the one on the PATH."""
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return os.path.realpath(found) if found and os.path.exists(found) else None


def archive_path(jars: list[str]) -> Path | None:
    """Where the archive of this JDK, this pyspark and these extra ``jars`` lives; None when
    no java is found."""
    import pyspark

    java = _java()
    if java is None:
        return None
    spark_jars = Path(pyspark.__file__).parent / "jars"
    libjvm = Path(java).parents[1] / "lib" / "server" / "libjvm.so"  # the JDK's build
    files = [java, str(libjvm), *sorted(str(p) for p in spark_jars.glob("*.jar")),
             *sorted(jars)]
    stamp = [(f, os.path.getsize(f), os.path.getmtime(f)) for f in files if os.path.exists(f)]
    digest = hashlib.sha256(json.dumps([pyspark.__version__, stamp]).encode()).hexdigest()
    return archive_dir() / f"driver-{digest[:16]}.jsa"


@dataclass(frozen=True)
class Recording:
    """An archive the JVM writes at its exit to ``partial``, to be moved to ``final``."""

    partial: Path
    final: Path


_pending: Recording | None = None  # the driver JVM is one per process, and so is this


def java_options(jars: list[str], user_options: str, record: bool) -> str:
    """The driver JVM options for class sharing: map the archive when there is one, else
    record one when ``record`` (see ``finish_recording``); nothing when the user's options
    already set class sharing."""
    global _pending
    if any(flag in user_options for flag in _USER_SHARING):
        return ""
    final = archive_path(jars)
    if final is None:
        return ""
    if final.exists():
        return f'"-XX:SharedArchiveFile={final}" {QUIET}'  # quoted: spaces
    if not record:
        return ""
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep(final.parent)
    _pending = Recording(final.with_name(f"{final.name}.{os.getpid()}.partial"), final)
    return f'"-XX:ArchiveClassesAtExit={_pending.partial}" {QUIET}'


def _sweep(folder: Path) -> None:
    """Remove archives left half-made by runs that failed or were killed (written at their
    JVM's exit, so any older than a few minutes is finished or abandoned)."""
    for old in folder.glob("*.partial"):
        try:
            if time.time() - old.stat().st_mtime > _STALE_SECONDS:
                old.unlink()
        except FileNotFoundError:  # another run swept it first
            pass


def finish_recording(timeout: float = 300) -> Path | None:
    """When this process's JVM records an archive: stop Spark, end the JVM, which writes the
    archive as it exits, and give the archive its final name. Returns that name, or None when
    nothing was recorded. Only a run that succeeded calls this, as its process's last Spark
    work (the JVM is gone after it); a failed run's half is swept."""
    global _pending
    from pyspark import SparkContext

    recording, _pending = _pending, None
    proc = getattr(SparkContext._gateway, "proc", None)
    if recording is None or proc is None:
        return None
    if SparkContext._active_spark_context is not None:
        SparkContext._active_spark_context.stop()
    proc.stdin.close()  # PythonGatewayServer exits the JVM when its stdin ends
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:  # left running; its half is swept later
        return None
    if code == 0 and recording.partial.exists() and recording.partial.stat().st_size > 0:
        os.replace(recording.partial, recording.final)
        return recording.final
    recording.partial.unlink(missing_ok=True)
    return None


_NO_VALUE = {"--verbose", "-v", "--supervise", "--help", "-h", "--version"}  # spark-submit's
_DEPLOY_MODE = re.compile(r"^\s*spark\.submit\.deployMode\s*[=:\s]\s*(\S+)", re.MULTILINE)


def _deploy_mode(args: Sequence[str]) -> str:
    """The deploy mode spark-submit will use for ``args``, as it decides: ``--deploy-mode``,
    then ``$DEPLOY_MODE``, then ``spark.submit.deployMode`` from ``--conf``, then from the
    properties file (``--properties-file``, else ``spark-defaults.conf``); client by default.
    Only the options before the application count."""
    flag = conf = props = None
    i = 0
    while i < len(args) and args[i].startswith("-"):  # the application ends the options
        key, eq, inline = args[i].partition("=")
        takes = not eq and key not in _NO_VALUE
        value = inline if eq else (args[i + 1] if takes and i + 1 < len(args) else "")
        if key == "--deploy-mode":
            flag = value
        elif key in ("--conf", "-c") and value.startswith("spark.submit.deployMode="):
            conf = value.split("=", 1)[1]
        elif key == "--properties-file":
            props = value
        i += 2 if takes else 1
    if mode := flag or os.environ.get("DEPLOY_MODE") or conf:
        return mode
    if props is None:
        conf_dir = os.environ.get("SPARK_CONF_DIR") or os.path.join(
            os.environ.get("SPARK_HOME", ""), "conf")
        props = os.path.join(conf_dir, "spark-defaults.conf")
    found = _DEPLOY_MODE.search(Path(props).read_text()) if os.path.isfile(props) else None
    return found.group(1) if found else "client"


def submit_options(jars: list[str], args: Sequence[str]) -> str:
    """The driver options ``spark-submit.sh`` adds for the archive: the mapping
    ``java_options`` gives when spark-submit starts the driver here (client mode, its
    default) and an archive exists. Nothing in cluster mode, where the driver starts on a node
    without this file (and a missing archive would turn off the JDK's own sharing there too),
    nor when the options already set class sharing. It never records: ``custseg run`` does."""
    if _deploy_mode(args) != "client":
        return ""
    return java_options(jars, " ".join(args), record=False)
