"""Refusals that come before Spark starts: each one line on stderr, exit 2, and no JVM.

Every command runs in a subprocess whose JAVA_HOME points nowhere, so a refusal that waited
for Spark would fail to start the JVM instead of printing its one line.
"""

from __future__ import annotations

import os
import subprocess
import sys

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from custseg.config import load_config
from custseg.errors import InputError
from custseg.io.preflight import check_input
from tests.conftest import UCI_HEADER, write_csv

GOOD = "536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850,United Kingdom"


def _custseg(*args: str) -> tuple[int, list[str]]:
    env = {**os.environ, "JAVA_HOME": "/nonexistent-java", "SPARK_HOME": "/nonexistent-spark"}
    done = subprocess.run([sys.executable, "-m", "custseg.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)
    return done.returncode, done.stderr.strip().splitlines()


def _parquet(path, columns=("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate",
                            "UnitPrice", "CustomerID", "Country"), rows=1):
    pq.write_table(pa.table({c: ["1"] * rows for c in columns}), path)
    return str(path)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "random.parquet").write_bytes(os.urandom(4096))
    (d / "fake.xlsx").write_text("not a workbook")
    (d / "afile").write_text("x")
    parts = d / "parts"
    parts.mkdir()
    _parquet(parts / "part-0.parquet")
    (parts / "part-1.parquet").write_bytes(b"PAR1" + os.urandom(100))
    (parts / "_SUCCESS").write_bytes(b"")
    nocol = _parquet(d / "nocol.parquet", columns=("InvoiceNo", "Quantity"))
    book = openpyxl.Workbook()
    book.active.title = "Sheet1"
    book.save(d / "sheet1.xlsx")
    return dict(
        dir=d, nocol=nocol,
        latin=write_csv(d / "latin.csv", [GOOD, GOOD.replace("WHITE", "CAFÉ")],
                        encoding="latin-1"),
        header=write_csv(d / "header.csv", []),
        semicolon=write_csv(d / "semi.csv", [GOOD.replace(",", ";")],
                            header=UCI_HEADER.replace(",", ";")),
    )


def test_bad_inputs_refused_in_one_line_without_spark(bad_files, tmp_path):
    d = bad_files["dir"]
    lh = str(tmp_path / "lh")
    cases = [
        (["ingest", "--input", str(d / "missing.csv")],
         f"{d / 'missing.csv'}: input file not found"),
        (["ingest", "--input", str(d / "random.parquet")],
         f"{d / 'random.parquet'}: not a readable parquet file (Parquet magic bytes not found "
         "in footer. Either the file is corrupted or this is not a parquet file.)"),
        (["ingest", "--input", str(d / "parts")],
         f"{d / 'parts' / 'part-1.parquet'}: not a readable parquet file"),
        (["ingest", "--input", bad_files["nocol"]],
         f"{bad_files['nocol']}: required column 'StockCode' (input.columns.stock_code) not "
         "found; columns in the file: InvoiceNo, Quantity"),
        (["ingest", "--input", str(d / "fake.xlsx")],
         f"{d / 'fake.xlsx'}: not a readable xlsx workbook"),
        (["ingest", "--input", str(d / "sheet1.xlsx")],
         f"{d / 'sheet1.xlsx'}: sheet 'Online Retail' not found (sheets: Sheet1); set "
         "input.sheet"),
        (["ingest", "--input", bad_files["latin"]],
         f"{bad_files['latin']}: not valid utf-8 text (first at data row 2, column "
         "description); set input.encoding, e.g. --set input.encoding=latin-1"),
        (["ingest", "--input", bad_files["header"]],
         f"{bad_files['header']}: no data rows (only a header)"),
        (["ingest", "--input", bad_files["semicolon"]],
         f"{bad_files['semicolon']}: the header is one column that looks ';'-separated "
         f"({UCI_HEADER.replace(',', ';')[:60]}...); set input.csv_delimiter, e.g. --set "
         "\"input.csv_delimiter=;\""),
        (["refine"], f"{os.path.abspath(lh)}/bronze/raw_invoices: no bronze table; run "
                     "'custseg ingest' first"),
        (["segment", "--as-of", "2011-02-30"],
         "--as-of must be a date yyyy-mm-dd, got '2011-02-30'"),
        (["drift"], f"{lh}/gold/rfm_segments: no segments; run 'custseg segment' first"),
    ]
    for args, expected in cases:
        stage = args[0]
        code, err = _custseg(*args, "--lakehouse", lh)
        assert code == 2 and len(err) == 1, (args, err)
        assert err[0].startswith(f"custseg {stage}: error: {expected}"), (args, err)
    assert not os.path.exists(lh)


def test_a_lakehouse_under_a_file_is_refused(bad_files):
    d = bad_files["dir"]
    code, err = _custseg("ingest", "--input", bad_files["latin"], "--lakehouse",
                         str(d / "afile" / "lh"))
    assert code == 2
    assert err == [f"custseg ingest: error: {d / 'afile' / 'lh'}: cannot be the lakehouse "
                   f"folder: {d / 'afile'} is a file"]


def test_an_unwritable_lakehouse_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode:
        pytest.skip("chattr +i (an immutable folder) is not available here")
    try:
        code, err = _custseg("refine", "--lakehouse", str(locked / "lh"))
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)
    assert code == 2
    assert err == [f"custseg refine: error: {locked / 'lh'}: the lakehouse folder cannot be "
                   f"written ({locked}: Operation not permitted)"]


def test_checks_pass_a_good_input_and_sample_only_the_start(tmp_path):
    cfg = load_config()
    assert check_input(write_csv(tmp_path / "ok.csv", [GOOD]), cfg) == "csv"
    # a bad byte beyond the sample is left to the Spark-side check, which reads everything
    rows = [GOOD] * 1000 + [GOOD.replace("WHITE", "CAFÉ")]
    assert check_input(write_csv(tmp_path / "late.csv", rows, encoding="latin-1"), cfg) == "csv"
    with pytest.raises(InputError, match="data row 2, column description"):
        check_input(write_csv(tmp_path / "early.csv", rows[999:], encoding="latin-1"), cfg)

