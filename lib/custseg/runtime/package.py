"""Build ``dist/custseg.zip``: the library as shipped to executors with ``--py-files``."""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

SHIPPED = (".py", ".yaml", ".j2", ".css")


def build_zip(out_dir: str = "dist") -> Path:
    """Zip the ``custseg`` package (sources, defaults and the dashboard's templates and style
    sheet, no caches) into ``out_dir``."""
    package = Path(__file__).resolve().parents[1]
    out = Path(out_dir) / "custseg.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.partial")  # two submits may build at once
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(package.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix in SHIPPED:
                zf.write(f, Path("custseg") / f.relative_to(package))
    tmp.replace(out)
    return out


if __name__ == "__main__":
    print(build_zip(sys.argv[1] if len(sys.argv) > 1 else "dist"))
