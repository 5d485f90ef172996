"""Resolve the Delta Lake jars once from Maven Central and cache them on disk.

Spark's own Ivy resolution runs in a throwaway ``spark-submit`` so the result is
exactly what ``--packages`` would give; jars that pyspark already ships (Hadoop,
Parquet, Jackson, ...) are left out so that one version of each is on the classpath.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from custseg.io.paths import user_cache

SCALA_VERSION = "2.13"
_MARKER = "RESOLVED"
_JAR_NAME = re.compile(r"^(?P<artifact>.+?)-(?P<version>\d[\w.]*)(?:-[\w.-]+)?\.jar$")


def delta_package() -> str:
    """Maven coordinate of the Delta jar matching the installed pyspark and delta-spark."""
    import pyspark

    spark_mm = ".".join(pyspark.__version__.split(".")[:2])
    return f"io.delta:delta-spark_{spark_mm}_{SCALA_VERSION}:{version('delta-spark')}"


def default_jars_dir() -> Path:
    """Jar cache: ``$CUSTSEG_JARS_DIR`` or ``~/.cache/custseg/jars/<coordinate>``."""
    env = os.environ.get("CUSTSEG_JARS_DIR")
    if env:
        return Path(env)
    name = delta_package().replace(":", "_")
    return user_cache("jars") / name


def _artifact(jar_name: str) -> str | None:
    match = _JAR_NAME.match(jar_name)
    return match.group("artifact") if match else None


def _pyspark_artifacts() -> set[str]:
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    return {a for a in (_artifact(p.name) for p in jars.glob("*.jar")) if a}


def cached_jars(jars_dir: Path | None = None) -> list[str] | None:
    """The cached jar paths, or None when they have not been resolved yet."""
    jars_dir = jars_dir or default_jars_dir()
    marker = jars_dir / _MARKER
    if not marker.exists():
        return None
    jars = [str(jars_dir / line) for line in marker.read_text().split() if line]
    return jars if all(Path(j).exists() for j in jars) else None


def ensure_delta_jars(jars_dir: Path | None = None, quiet: bool = True) -> list[str]:
    """Return the Delta jar paths, resolving them from Maven Central when not cached."""
    jars_dir = jars_dir or default_jars_dir()
    jars = cached_jars(jars_dir)
    if jars is not None:
        return jars
    package = delta_package()
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    spark_submit = spark_home / "bin" / "spark-submit"
    env = dict(os.environ, SPARK_HOME=str(spark_home), PYSPARK_PYTHON=sys.executable)
    with tempfile.TemporaryDirectory(prefix="custseg-ivy-") as tmp:
        noop = Path(tmp) / "noop.py"
        noop.write_text("")
        ivy = Path(tmp) / "ivy"
        cmd = [
            str(spark_submit), "--master", "local[1]",
            "--packages", package, "--conf", f"spark.jars.ivy={ivy}", str(noop),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, env=env)
        resolved = sorted((ivy / "jars").glob("*.jar")) if (ivy / "jars").exists() else []
        if result.returncode != 0 or not resolved:
            tail = "\n".join((result.stderr or "").strip().splitlines()[-5:])
            raise RuntimeError(f"could not resolve {package} from Maven Central:\n{tail}")
        shipped = _pyspark_artifacts()
        keep = []
        staging = jars_dir.with_name(jars_dir.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for jar in resolved:
            short = jar.name.split("_", 1)[1] if "_" in jar.name else jar.name
            if _artifact(short) in shipped:
                continue
            shutil.copy2(jar, staging / jar.name)
            keep.append(jar.name)
        (staging / _MARKER).write_text("\n".join(keep) + "\n")
        shutil.rmtree(jars_dir, ignore_errors=True)
        staging.rename(jars_dir)
    if not quiet:
        print(f"resolved {package}: {len(keep)} jars in {jars_dir}", file=sys.stderr)
    return [str(jars_dir / name) for name in keep]


def main() -> None:
    """``python -m custseg.runtime.jars``: resolve the jars and print their paths."""
    jars = ensure_delta_jars(quiet=False)
    print(",".join(jars))


if __name__ == "__main__":
    main()
