"""Bronze: formats, lineage, column mapping, exactly-once, and bad input from the CLI."""

from __future__ import annotations

import datetime as dt
import shutil

import openpyxl
import pandas as pd
import pytest
from pyspark.sql import functions as F

from custseg.cli import main
from custseg.config import load_config
from custseg.io import lakehouse, sources
from custseg.stages.ingest import ingest, read_ahead
from custseg.stages.refine import refine
from tests.conftest import UCI_HEADER, write_csv

FAST = ["--set", "spark.shuffle_partitions=2"]
ROWS = [  # as the UCI workbook stores them: numbers where all digits, text otherwise
    [536365, "85123A", "WHITE HANGING HEART", 6, dt.datetime(2010, 12, 1, 8, 26), 2.55,
     17850, "United Kingdom"],
    [536365, 71053, "WHITE METAL LANTERN", 6, dt.datetime(2010, 12, 1, 8, 26), 3.39,
     17850, "United Kingdom"],
    ["C536379", "D", "Discount", -1, dt.datetime(2010, 12, 1, 9, 41), 27.5,
     14527, "United Kingdom"],
    [536544, 21773, None, 1, dt.datetime(2010, 12, 1, 14, 32), 2.51, None, "United Kingdom"],
]
EXPECTED_TEXT = [
    ("536365", "85123A", "WHITE HANGING HEART", "6", "2010-12-01 08:26:00", "2.55", "17850"),
    ("536365", "71053", "WHITE METAL LANTERN", "6", "2010-12-01 08:26:00", "3.39", "17850"),
    ("C536379", "D", "Discount", "-1", "2010-12-01 09:41:00", "27.5", "14527"),
    ("536544", "21773", None, "1", "2010-12-01 14:32:00", "2.51", None),
]
TEXT_COLS = ["invoice_no", "stock_code", "description", "quantity", "invoice_date",
             "unit_price", "customer_id"]


def make_xlsx(path, rows=ROWS, sheet="Online Retail"):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = sheet
    ws.append(UCI_HEADER.split(","))
    for r in rows:
        ws.append(r)
    wb.save(path)
    return str(path)


def bronze(spark, root):
    return lakehouse.read(spark, lakehouse.table_path(root, "bronze", "raw_invoices"))


def test_xlsx_mixed_cells_become_exact_text(spark, cfg, tmp_path):
    root = str(tmp_path / "lh")
    src = make_xlsx(tmp_path / "retail.xlsx")
    summary = ingest(spark, src, root, cfg)
    assert summary.rows_out["bronze/raw_invoices"] == 4
    rows = bronze(spark, root).orderBy("source_row").collect()
    assert [tuple(r[c] for c in TEXT_COLS) for r in rows] == EXPECTED_TEXT
    assert [r["source_row"] for r in rows] == [1, 2, 3, 4]
    assert {r["source_file"] for r in rows} == {src}
    assert len({r["batch_id"] for r in rows}) == 1
    assert all(r["ingested_at"] is not None and len(r["row_hash"]) == 64 for r in rows)


def test_parquet_and_csv_give_the_same_bronze_text(spark, cfg, tmp_path):
    pdf = pd.DataFrame(ROWS, columns=UCI_HEADER.split(","))
    for col in ("InvoiceNo", "StockCode"):
        pdf[col] = pdf[col].astype(str)
    pdf["CustomerID"] = pdf["CustomerID"].astype("float64")
    pdf.to_parquet(tmp_path / "retail.parquet")
    csv_rows = [",".join("" if v is None else str(v) for v in r) for r in ROWS]
    write_csv(tmp_path / "retail.csv", csv_rows)
    xlsx_root, pq_root, csv_root = (str(tmp_path / n) for n in ("x", "p", "c"))
    ingest(spark, make_xlsx(tmp_path / "retail.xlsx"), xlsx_root, cfg)
    ingest(spark, str(tmp_path / "retail.parquet"), pq_root, cfg)
    ingest(spark, str(tmp_path / "retail.csv"), csv_root, cfg)
    pq = bronze(spark, pq_root).orderBy("source_row").collect()
    assert [tuple(r[c] for c in TEXT_COLS) for r in pq] == EXPECTED_TEXT
    hashes = [sorted((r["source_row"], r["row_hash"]) for r in bronze(spark, root).collect())
              for root in (xlsx_root, pq_root)]
    assert hashes[0] == hashes[1]
    csv = bronze(spark, csv_root).orderBy("source_row").collect()
    assert [r["source_row"] for r in csv] == [1, 2, 3, 4]
    assert csv[0]["invoice_date"] == "2010-12-01 08:26:00"



def test_csv_rows_are_numbered_in_file_order_across_splits(spark, tmp_path):
    """Files cut into many scan partitions (and one file sharing a partition with another's
    tail): each row's number is the one written into its invoice number."""
    from custseg.io.sources import read_source

    folder = tmp_path / "parts"
    folder.mkdir()
    sizes = {"a.csv": 3000, "b.csv": 1700, "c.csv": 5}
    for name, n in sizes.items():
        write_csv(folder / name, [f"{name[0]}{i},S,D,1,2011-01-01 10:00,1.0,1,UK"
                                  for i in range(1, n + 1)])
    spark.conf.set("spark.sql.files.maxPartitionBytes", "8192")
    spark.conf.set("spark.sql.files.openCostInBytes", "0")
    try:
        df, fmt, _ = read_source(spark, str(folder), load_config())
        assert fmt == "csv"
        assert df.rdd.getNumPartitions() > 10
        rows = df.select("source_file", "source_row", "invoice_no").collect()
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
        spark.conf.unset("spark.sql.files.openCostInBytes")
    assert len(rows) == sum(sizes.values())
    for r in rows:
        name = r["source_file"].rsplit("/", 1)[1]
        assert r["invoice_no"] == f"{name[0]}{r['source_row']}"

def test_same_content_twice_adds_nothing_new_file_appends(spark, cfg, tmp_path):
    root = str(tmp_path / "lh")
    src = make_xlsx(tmp_path / "a.xlsx")
    ingest(spark, src, root, cfg)
    path = lakehouse.table_path(root, "bronze", "raw_invoices")
    version = lakehouse.version(spark, path)
    copy = tmp_path / "renamed.xlsx"
    shutil.copy(src, copy)
    read_ahead(str(copy), root, cfg)  # its content is in bronze: not read ahead
    assert not sources._ahead
    again = ingest(spark, str(copy), root, cfg)
    assert again.rows_out["bronze/raw_invoices"] == 0
    assert any("already ingested" in n for n in again.notes)
    assert lakehouse.version(spark, path) == version
    other = make_xlsx(tmp_path / "b.xlsx", ROWS[:2])
    read_ahead(other, root, cfg)
    assert len(sources._ahead) == 1
    assert ingest(spark, other, root, cfg).rows_out["bronze/raw_invoices"] == 2
    assert not sources._ahead  # the stage took what was read ahead
    assert bronze(spark, root).count() == 6


def test_column_mapping_and_amount_only(spark, tmp_path):
    header = "Receipt,SKU,Item,Total,When,Buyer,Market"
    rows = ["R1,A1,Apple,4.50,2024-03-01 10:00:00,7,Norway",
            "R2,B2,Pear,2.25,2024-03-02 11:00:00,,Norway"]
    src = write_csv(tmp_path / "other.csv", rows, header=header)
    cfg = load_config(overrides=[
        "input.columns.invoice_no=Receipt", "input.columns.stock_code=SKU",
        "input.columns.description=Item", "input.columns.quantity=null",
        "input.columns.unit_price=null", "input.columns.amount=Total",
        "input.columns.invoice_date=When", "input.columns.customer_id=Buyer",
        "input.columns.country=Market", "spark.shuffle_partitions=2"])
    root = str(tmp_path / "lh")
    ingest(spark, src, root, cfg)
    summary = refine(spark, root, cfg)
    assert summary.rows_out["silver/fct_invoices"] == 2
    fact = {r["invoice_no"]: r for r in
            lakehouse.read(spark, lakehouse.table_path(root, "silver", "fct_invoices")).collect()}
    assert (fact["R1"]["quantity"], fact["R1"]["unit_price"], fact["R1"]["total_price"]) == (
        1, 4.5, 4.5)
    assert (fact["R1"]["customer_id"], fact["R2"]["customer_id"]) == (7, None)
    assert fact["R2"]["country"] == "Norway"


# Bad input: one line naming the file and the column or row, exit code 2, no table written.

def _fails(capsys, args):
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_missing_file(capsys, spark, tmp_path):
    missing = str(tmp_path / "nope.xlsx")
    code, err = _fails(capsys, ["ingest", "--lakehouse", str(tmp_path / "lh"),
                                "--input", missing, *FAST])
    assert code == 2
    assert err == [f"custseg ingest: error: {missing}: input file not found"]


def test_wrong_sheet(capsys, spark, tmp_path):
    src = make_xlsx(tmp_path / "sheet.xlsx", sheet="Sheet1")
    code, err = _fails(capsys, ["ingest", "--lakehouse", str(tmp_path / "lh"),
                                "--input", src, *FAST])
    assert code == 2 and len(err) == 1
    assert src in err[0] and "sheet 'Online Retail' not found (sheets: Sheet1)" in err[0]
    assert not lakehouse.exists(spark, lakehouse.table_path(str(tmp_path / "lh"), "bronze",
                                                            "raw_invoices"))


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_missing_required_column(capsys, spark, tmp_path, kind):
    header = UCI_HEADER.replace(",CustomerID", "")
    if kind == "csv":
        src = write_csv(tmp_path / "cols.csv",
                        ["536365,85123A,X,6,2010-12-01 08:26:00,2.55,United Kingdom"],
                        header=header)
    else:
        wb = openpyxl.Workbook()
        wb.active.title = "Online Retail"
        wb.active.append(header.split(","))
        wb.active.append([536365, "85123A", "X", 6, dt.datetime(2010, 12, 1), 2.55, "UK"])
        src = str(tmp_path / "cols.xlsx")
        wb.save(src)
    code, err = _fails(capsys, ["ingest", "--lakehouse", str(tmp_path / "lh"),
                                "--input", src, *FAST])
    assert code == 2 and len(err) == 1
    assert src in err[0]
    assert "required column 'CustomerID' (input.columns.customer_id) not found" in err[0]


def test_empty_files(capsys, spark, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    header_only = write_csv(tmp_path / "header.csv", [])
    blank_xlsx = tmp_path / "blank.xlsx"
    wb = openpyxl.Workbook()
    wb.active.title = "Online Retail"
    wb.save(blank_xlsx)
    cases = [(str(empty), "input file is empty"), (header_only, "no data rows"),
             (str(blank_xlsx), "is empty (no header row)")]
    for src, message in cases:
        code, err = _fails(capsys, ["ingest", "--lakehouse", str(tmp_path / "lh"),
                                    "--input", src, *FAST])
        assert code == 2 and len(err) == 1, (src, err)
        assert src in err[0] and message in err[0]
    assert not lakehouse.exists(spark, lakehouse.table_path(str(tmp_path / "lh"), "bronze",
                                                            "raw_invoices"))


def test_csv_not_utf8(capsys, spark, cfg, tmp_path):
    rows = ["536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850,United Kingdom",
            "536366,22633,CAFÉ SET,6,2010-12-01 08:28:00,1.85,17850,United Kingdom"]
    src = write_csv(tmp_path / "latin.csv", rows, encoding="latin-1")
    root = str(tmp_path / "lh")
    code, err = _fails(capsys, ["ingest", "--lakehouse", root, "--input", src, *FAST])
    assert code == 2 and len(err) == 1
    assert src in err[0] and "not valid utf-8 text (first at data row 2, column description)" in \
        err[0]
    assert not lakehouse.exists(spark, lakehouse.table_path(root, "bronze", "raw_invoices"))
    code = main(["ingest", "--lakehouse", root, "--input", src, *FAST,
                 "--set", "input.encoding=latin-1"])
    assert code == 0
    desc = bronze(spark, root).where(F.col("source_row") == 2).first()["description"]
    assert desc == "CAFÉ SET"


def test_failed_ingest_leaves_existing_table_unchanged(capsys, spark, cfg, tmp_path):
    root = str(tmp_path / "lh")
    ingest(spark, make_xlsx(tmp_path / "ok.xlsx"), root, cfg)
    path = lakehouse.table_path(root, "bronze", "raw_invoices")
    before = lakehouse.version(spark, path)
    bad = write_csv(tmp_path / "bad.csv", ["x"], header="Nothing")
    code, _ = _fails(capsys, ["ingest", "--lakehouse", root, "--input", bad, *FAST])
    assert code == 2
    assert lakehouse.version(spark, path) == before


def test_bad_config_exits_2_before_spark(capsys, tmp_path):
    code, err = _fails(capsys, ["refine", "--lakehouse", str(tmp_path),
                                "--set", "input.fromat=csv"])
    assert code == 2
    assert err == ["custseg refine: error: --set input.fromat=csv: unknown config key "
                   "'input.fromat'"]


def test_refine_without_bronze(capsys, spark, tmp_path):
    code, err = _fails(capsys, ["refine", "--lakehouse", str(tmp_path / "none"), *FAST])
    assert code == 2 and "no bronze table; run 'custseg ingest' first" in err[0]


def _corrupt_pages(path):
    """A parquet file whose footer reads but whose column chunks do not decompress."""
    n = 5000
    pd.DataFrame({"InvoiceNo": [str(536365 + i) for i in range(n)], "StockCode": ["85123A"] * n,
                  "Description": ["X" * 20] * n, "Quantity": list(range(1, n + 1)),
                  "InvoiceDate": ["2010-12-01 08:26:00"] * n, "UnitPrice": [2.55] * n,
                  "CustomerID": [17850] * n, "Country": ["United Kingdom"] * n}
                 ).to_parquet(path, compression="snappy", index=False)
    data = bytearray(path.read_bytes())
    for i in range(100, len(data) // 2, 97):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return str(path)


def test_corrupt_content_found_while_reading_is_one_line_and_writes_nothing(
        capsys, spark, tmp_path):
    import zipfile

    parquet = _corrupt_pages(tmp_path / "pages.parquet")
    good = make_xlsx(tmp_path / "good.xlsx")
    book = str(tmp_path / "cells.xlsx")
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(book, "w") as zout:
        for item in zin.infolist():  # the sheet points at a shared string that is not there
            zout.writestr(item, b"<worksheet><sheetData><row><c r='A1' t='s'><v>99</v></c>"
                                b"</row></sheetData></worksheet>"
                          if item.filename.startswith("xl/worksheets/") else zin.read(item))
    root = str(tmp_path / "lh")
    for src, message, end in [
            (parquet, f"{parquet}: cannot be read as parquet (", "); nothing was written"),
            (book, f"{book}: sheet 'Online Retail' cannot be read (Cell string index not found "
                   "in shared strings table)", ")")]:
        code, err = _fails(capsys, ["ingest", "--lakehouse", root, "--input", src, *FAST])
        assert code == 2 and len(err) == 1, err
        assert err[0].startswith(f"custseg ingest: error: {message}"), err
        assert err[0].endswith(end), err
        assert "Exception" not in err[0]
    assert not lakehouse.exists(spark, lakehouse.table_path(root, "bronze", "raw_invoices"))


def test_a_commit_the_storage_refuses_is_one_line_and_the_table_stays(capsys, spark, cfg,
                                                                      tmp_path):
    import subprocess

    root = str(tmp_path / "lh")
    ingest(spark, make_xlsx(tmp_path / "ok.xlsx"), root, cfg)
    path = lakehouse.table_path(root, "bronze", "raw_invoices")
    before = lakehouse.version(spark, path)
    log_dir = f"{path}/_delta_log"
    if subprocess.run(["chattr", "+i", log_dir], capture_output=True).returncode:
        pytest.skip("chattr +i (an immutable folder) is not available here")
    try:
        code, err = _fails(capsys, ["ingest", "--lakehouse", root, "--input",
                                    make_xlsx(tmp_path / "more.xlsx", rows=ROWS[:1]), *FAST])
    finally:
        subprocess.run(["chattr", "-i", log_dir], check=True)
    assert code == 1
    assert err == [f"custseg ingest: error: cannot write {log_dir} (Operation not permitted); "
                   "every table is at its last commit"]
    assert lakehouse.version(spark, path) == before


def test_a_corrupt_file_from_the_command_line_shows_no_java_trace(tmp_path):
    import subprocess
    import sys

    src = _corrupt_pages(tmp_path / "pages.parquet")
    done = subprocess.run([sys.executable, "-m", "custseg.cli", "ingest", "--input", src,
                           "--lakehouse", str(tmp_path / "lh"), *FAST],
                          capture_output=True, text=True, timeout=300)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2
    assert err[-1].startswith(f"custseg ingest: error: {src}: cannot be read as parquet (")
    assert not [line for line in err if "Exception" in line or line.startswith("\tat ")], err
