"""The library's shape: short functions, and the JVM reached only where it is guarded."""

from __future__ import annotations

import ast
import re
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib" / "custseg"
MOST_LINES = 60


def test_no_function_in_the_library_is_longer_than_sixty_lines():
    long = []
    for path in sorted(LIB.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MOST_LINES:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_no_py4j_internals_in_the_library():
    hits = sorted({path.name for path in LIB.rglob("*.py")
                   if re.search(r"_jvm|_jsc|\._jc\b", path.read_text(encoding="utf-8"))})
    assert hits == []
