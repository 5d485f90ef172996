"""Workbook cells as text: the bulk conversion against the cell-by-cell rule."""

from __future__ import annotations

import datetime as dt

import openpyxl
import pytest

from custseg.config import load_config
from custseg.errors import InputError
from custseg.io import sources
from custseg.io.sources import _cell_text, _column_text
from tests.conftest import UCI_HEADER

# what the UCI workbook holds (floats, text, naive date-times, empty cells) and what it could
HOSTILE = [
    1.0, -0.0, 0.0, 1e15, 1e15 - 1, -1e15 + 1, 1e16, 0.1, 0.1 + 0.2, float("nan"), float("inf"),
    -float("inf"), 1.5e-7, 123456789012.5, -3.25, 2.0 ** 53, True, False, 7, -12, "", " ",
    "C536379", None, dt.datetime(2010, 12, 1, 8, 26), dt.datetime(2011, 1, 1, 0, 0, 59, 999999),
    dt.datetime(1, 1, 1, 0, 0, 0, 1), dt.datetime(1969, 12, 31, 23, 59, 59, 500000),
    dt.datetime(999, 5, 6, 7, 8, 9), dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
    dt.date(2011, 2, 3), dt.timedelta(hours=1, minutes=2),
    dt.datetime(2011, 1, 1, tzinfo=dt.UTC),
]


def test_a_mixed_column_reads_as_worked_out_by_hand():
    cells = [536365.0, "C536379", None, "", 2.55, 1e15, 1e15 - 1, float("nan"), -0.0,
             dt.datetime(2010, 12, 1, 8, 26, 30, 999999), dt.datetime(1969, 12, 31, 23, 59, 59, 1)]
    assert _column_text(cells).to_pylist() == [
        "536365", "C536379", None, None, "2.55", "1000000000000000.0", "999999999999999", None,
        "0", "2010-12-01 08:26:30", "1969-12-31 23:59:59"]


def test_every_kind_of_cell_reads_as_cell_by_cell():
    want = [_cell_text(v) for v in HOSTILE]
    assert _column_text(HOSTILE).to_pylist() == want
    for kind in {type(v) for v in HOSTILE}:  # each type alone: the one-type path
        alone = [v for v in HOSTILE if type(v) is kind]
        assert _column_text(alone).to_pylist() == [_cell_text(v) for v in alone], kind


def _workbook(path, rows: int) -> str:
    wb = openpyxl.Workbook()
    wb.active.title = "Online Retail"
    wb.active.append(UCI_HEADER.split(","))
    for i in range(rows):
        wb.active.append([536365 + i, "85123A", "HEART", 6, dt.datetime(2010, 12, 1, 8, 26),
                          2.55, 17850, "United Kingdom"])
    wb.save(path)
    return str(path)


def test_a_workbook_read_ahead_is_what_a_read_gives_and_is_taken_once(cfg, tmp_path):
    path = _workbook(tmp_path / "a.xlsx", 3)
    sources.read_ahead(path, cfg)
    taken = sources._take_read_ahead(path, cfg)
    assert taken is not None and taken.equals(sources._xlsx_table(path, cfg))
    assert taken.column("invoice_no").to_pylist() == ["536365", "536366", "536367"]
    assert sources._take_read_ahead(path, cfg) is None


def test_a_read_ahead_is_not_taken_for_a_file_changed_since_or_other_settings(cfg, tmp_path):
    path = _workbook(tmp_path / "a.xlsx", 3)
    sources.read_ahead(path, cfg)
    sources.read_ahead(path, cfg, unless=lambda: True)  # told it will not be read
    assert len(sources._ahead) == 1
    assert sources._take_read_ahead(path, load_config(overrides=["input.sheet=Sheet"])) is None
    _workbook(tmp_path / "a.xlsx", 2)  # rewritten: another size and time
    assert sources._take_read_ahead(path, cfg) is None
    sources.drop_read_ahead()
    assert not sources._ahead


def test_a_read_ahead_that_failed_fails_the_read_with_its_message(tmp_path):
    path = _workbook(tmp_path / "a.xlsx", 1)
    other = load_config(overrides=["input.sheet=Orders"])
    sources.read_ahead(path, other)
    with pytest.raises(InputError, match="sheet 'Orders' not found"):
        sources._take_read_ahead(path, other)
