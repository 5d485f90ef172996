"""What ``spark-submit.sh`` hands to spark-submit, decided in one Python process.

The script needs the shipped zip, the Delta jars, Spark's home, the class archive's driver
options and the settings custseg's own sessions launch with (``spark_conf.LAUNCH_CONF``). Four
Python processes took about 0.75 s of every submit; one takes about 0.3 s.
``python -m custseg.runtime.submit DIST [spark-submit arguments]`` prints them as shell
assignments (``ZIP``, ``JARS``, ``SPARK_HOME``, ``CDS`` and the array ``CONF``) for the script
to ``eval``.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from importlib.util import find_spec

from custseg.runtime import class_archive
from custseg.runtime.jars import ensure_delta_jars
from custseg.runtime.package import build_zip
from custseg.runtime.spark_conf import LAUNCH_CONF


def spark_home() -> str:
    """``SPARK_HOME`` when set, else the pip pyspark package's folder (found, not imported:
    importing pyspark costs a quarter of a second)."""
    if home := os.environ.get("SPARK_HOME"):
        return home
    spec = find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise SystemExit("spark-submit.sh: no SPARK_HOME and no pyspark package")
    return os.path.dirname(spec.origin)


def assignments(dist: str, args: Sequence[str]) -> dict[str, str]:
    """The values ``spark-submit.sh`` uses. The class archive only speeds the driver up, so a
    failure to decide on it leaves it out rather than stopping the job."""
    jars = ensure_delta_jars(quiet=False)
    try:
        cds = class_archive.submit_options(jars, args)
    except Exception as e:  # noqa: BLE001 - any failure: submit without the archive
        print(f"spark-submit.sh: class archive left out: {e}", file=sys.stderr)
        cds = ""
    return {"ZIP": str(build_zip(dist)), "JARS": ",".join(jars), "SPARK_HOME": spark_home(),
            "CDS": cds}


def conf_arguments() -> list[str]:
    """``--conf KEY=VALUE`` for each launch setting."""
    return [a for key, value in LAUNCH_CONF.items() for a in ("--conf", f"{key}={value}")]


if __name__ == "__main__":
    for name, value in assignments(sys.argv[1], sys.argv[2:]).items():
        print(f"{name}={shlex.quote(value)}")
    print(f"CONF=({shlex.join(conf_arguments())})")
