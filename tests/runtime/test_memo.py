"""materialise: a step is built once per key (its inputs' versions and its settings), built
again when an input, a setting or an output (a table or a file) changes, and recorded only when
its build ends."""

from __future__ import annotations

import shutil
import threading

import pytest

from custseg.io import lakehouse
from custseg.runtime import context, memo
from tests.conftest import delta_file_stats


@pytest.fixture
def root(spark, tmp_path):
    base = str(tmp_path)
    lakehouse.overwrite(spark.range(3), lakehouse.table_path(base, "silver", "a"))
    lakehouse.overwrite(spark.range(2), lakehouse.table_path(base, "silver", "b"))
    return base


def _step(scope="x", **settings):
    return memo.Step("t", scope, inputs=[("silver", "a")], outputs=[("gold", scope)],
                     settings=settings)


def _builder(spark, root, calls):
    def build(key: str) -> None:
        calls.append(key)
        lakehouse.overwrite(spark.range(1), lakehouse.table_path(root, "gold", "x"))
    return build


def test_a_step_is_built_again_only_when_its_key_or_output_changes(spark, root):
    calls: list[str] = []
    build = _builder(spark, root, calls)
    with context.active("first"):
        assert memo.materialise(spark, root, _step(n=1), build) is None
    with context.active("second"):
        assert memo.materialise(spark, root, _step(n=1), build) == "first"
        assert len(calls) == 1
        assert memo.materialise(spark, root, _step(n=2), build) is None  # a setting
        assert len(calls) == 2
        lakehouse.overwrite(spark.range(4), lakehouse.table_path(root, "silver", "a"))
        assert memo.materialise(spark, root, _step(n=2), build) is None  # an input
        assert memo.materialise(spark, root, _step(n=2), build) == "second"
        shutil.rmtree(lakehouse.table_path(root, "gold", "x"))
        assert memo.materialise(spark, root, _step(n=2), build) is None  # an output gone
    assert len(calls) == 4
    # the key names the input's version (0, then 1 after the overwrite) and the setting
    assert '"silver/a": 0' in calls[0] and '"n": 1' in calls[0]
    assert '"silver/a": 1' in calls[2] and '"n": 2' in calls[2]


def test_a_step_whose_file_is_gone_is_built_again(spark, root, tmp_path):
    page = tmp_path / "out" / "page.html"
    step = memo.Step("t", "page", inputs=[("silver", "a")], outputs=(), files=(str(page),))
    calls: list[str] = []

    def build(key: str) -> None:
        calls.append(key)
        page.parent.mkdir(exist_ok=True)
        page.write_text("drawn")

    with context.active("first"):
        assert memo.materialise(spark, root, step, build) is None
    with context.active("second"):
        assert memo.materialise(spark, root, step, build) == "first"
        page.unlink()
        assert memo.materialise(spark, root, step, build) is None
    assert len(calls) == 2 and page.read_text() == "drawn"


def test_steps_built_together_are_recorded_in_one_commit_and_a_failed_one_not_at_all(
        spark, root):
    runs = lakehouse.table_path(root, *memo.STAGE_RUNS)
    built: list[str] = []

    def make(name):
        def build(_key: str) -> None:
            built.append(name)
            lakehouse.overwrite(spark.range(1), lakehouse.table_path(root, "gold", name))
        return build

    with context.active("both"):
        done = memo.materialise_all(spark, root, [(_step("p"), make("p")),
                                                   (_step("q"), make("q"))])
    assert done == [None, None] and sorted(built) == ["p", "q"]  # built side by side
    assert lakehouse.version(spark, runs) == 0
    assert lakehouse.read(spark, runs).count() == 2

    def fails(_key: str) -> None:
        raise RuntimeError("killed half way")

    with context.active("broken"), pytest.raises(RuntimeError):
        memo.materialise_all(spark, root, [(_step("r"), make("r")), (_step("s"), fails)])
    assert lakehouse.version(spark, runs) == 0  # r was built but its record never written
    with context.active("after"):
        done = memo.materialise_all(spark, root, [(_step("p"), make("p")),
                                                   (_step("r"), make("r"))])
    assert done == ["both", None] and sorted(built) == ["p", "q", "r", "r"]


def test_steps_are_built_side_by_side_and_their_new_tables_skip_column_stats(spark, root):
    """Each build waits for the other at a barrier: one after the other, the first would
    wait alone and time out."""
    meet = threading.Barrier(2, timeout=120)

    def make(name):
        def build(_key: str) -> None:
            meet.wait()
            lakehouse.overwrite(spark.range(4), lakehouse.table_path(root, "gold", name))
        return build

    with context.active("together"):
        done = memo.materialise_all(spark, root, [(_step("u"), make("u")),
                                                   (_step("v"), make("v"))])
    assert done == [None, None]
    for name in ("u", "v"):
        stats = delta_file_stats(lakehouse.table_path(root, "gold", name))
        assert sum(s["numRecords"] for s in stats) == 4
        assert not any(s.get("minValues") for s in stats), name
    assert spark.conf.get(lakehouse.STATS_DEFAULT, None) is None

