"""Checks that need no Spark, run before the JVM starts.

A missing, empty, unreadable or mislabelled input, a mapping that names a column the file
lacks, text that does not decode, a lakehouse that cannot be written, a stage whose input table
is not there yet, a bad ``--as-of``: each is refused in one line within a second, instead of
after 10-20 s of JVM start-up. Remote inputs (URIs) are left to the Spark-side checks. The
same messages come from the Spark-side checks, which still run for what only a full read finds.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from custseg.config import FIELDS, Config
from custseg.errors import InputError
from custseg.io.catalog import BRONZE, FACT, RFM_SEGMENTS
from custseg.io.paths import is_uri, table_path

SAMPLE_BYTES = 1 << 16  # csv text checked per file before Spark; Spark checks the rest
_EXTENSIONS = ((".xlsx", "xlsx"), (".xlsm", "xlsx"), (".csv", "csv"), (".txt", "csv"),
               (".parquet", "parquet"))
# A stage run on its own needs the table an earlier stage writes: (layer, table, message).
_NEEDS = {
    "refine": (*BRONZE, "no bronze table; run 'custseg ingest' first"),
    "report": ("silver", FACT, "no silver table; run 'custseg refine' first"),
    "segment": ("silver", FACT, "no silver table; run 'custseg refine' first"),
    "clv": ("silver", FACT, "no silver table; run 'custseg refine' first"),
    "drift": ("gold", RFM_SEGMENTS, "no segments; run 'custseg segment' first"),
    "audiences": ("gold", RFM_SEGMENTS, "no segments; run 'custseg segment' first"),
    "export": ("gold", RFM_SEGMENTS, "no segments; run 'custseg segment' first"),
}


def detect_format(path: str, configured: str) -> str:
    """The file format from configuration, else from the extension (or a folder's files)."""
    if configured != "auto":
        return configured
    p = path.rstrip("/").lower()
    for ext, fmt in _EXTENSIONS:
        if p.endswith(ext):
            return fmt
    if os.path.isdir(path):
        names = os.listdir(path)
        for ext, fmt in ((".parquet", "parquet"), (".csv", "csv")):
            if any(f.endswith(ext) for f in names):
                return fmt
    raise InputError(f"{path}: cannot tell the format from the extension; set input.format")


def map_columns(path: str, header: Sequence[str | None], cfg: Config) -> dict[str, str | None]:
    """Canonical field -> source column name, case- and space-insensitive."""
    by_key = {str(h).strip().lower(): h for h in header if h is not None}
    cols = cfg["input"]["columns"]
    mapping: dict[str, str | None] = {}
    for field in FIELDS:
        wanted = cols.get(field)
        if not wanted:
            mapping[field] = None
            continue
        found = by_key.get(str(wanted).strip().lower())
        if found is None:
            shown = ", ".join(str(h) for h in header if h is not None) or "none"
            raise InputError(
                f"{path}: required column '{wanted}' (input.columns.{field}) not found; "
                f"columns in the file: {shown}"
            )
        mapping[field] = found
    return mapping


def parse_as_of(text: str) -> dt.date:
    """An --as-of value as a date, or one clear line naming the bad value."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InputError(f"--as-of must be a date yyyy-mm-dd, got {text!r}") from None


def data_files(path: str, suffixes: tuple[str, ...] = ()) -> list[Path]:
    """The file itself, or a folder's data files (not hidden, not ``_``-prefixed) in name
    order, keeping only ``suffixes`` when given."""
    p = Path(path)
    if p.is_file():
        return [p]
    return sorted(f for f in p.rglob("*") if f.is_file()
                  and not any(part.startswith(("_", ".")) for part in f.relative_to(p).parts)
                  and (not suffixes or f.name.lower().endswith(suffixes)))


def check_input(path: str, cfg: Config) -> str:
    """Refuse a local input that Spark would fail on or misread; return its format."""
    if is_uri(path):
        return detect_format(path, cfg["input"]["format"])
    if not os.path.exists(path):
        raise InputError(f"{path}: input file not found")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: input cannot be read (permission denied)")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise InputError(f"{path}: input file is empty (0 bytes)")
    fmt = detect_format(path, cfg["input"]["format"])
    {"xlsx": _check_xlsx, "csv": _check_csv, "parquet": _check_parquet}[fmt](path, cfg)
    return fmt


def _check_xlsx(path: str, cfg: Config) -> None:
    """A zip workbook holding the configured sheet (its columns are checked as it is read:
    reading even the header row of a large sheet loads all of it)."""
    from python_calamine import CalamineError, CalamineWorkbook

    if os.path.isdir(path):
        raise InputError(f"{path}: an xlsx input must be one file, not a folder")
    try:
        sheets = CalamineWorkbook.from_path(path).sheet_names
    except (CalamineError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable xlsx workbook ({exc})") from None
    sheet = cfg["input"]["sheet"]
    if sheet and sheet not in sheets:
        raise InputError(f"{path}: sheet '{sheet}' not found (sheets: {', '.join(sheets)}); "
                         "set input.sheet")


def _check_parquet(path: str, cfg: Config) -> None:
    """Every file has a parquet footer with the mapped columns; some file has rows."""
    import pyarrow.parquet as pq

    files = data_files(path, (".parquet",)) if os.path.isdir(path) else [Path(path)]
    if not files:
        raise InputError(f"{path}: the folder holds no .parquet files")
    rows = 0
    for f in files:
        try:
            meta = pq.read_metadata(f)
        except Exception as exc:  # noqa: BLE001 (pyarrow raises ArrowInvalid, OSError and more)
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{f}: not a readable parquet file ({reason})") from None
        map_columns(str(f), meta.schema.to_arrow_schema().names, cfg)
        rows += meta.num_rows
    if rows == 0:
        raise InputError(f"{path}: no data rows")


def _check_csv(path: str, cfg: Config) -> None:
    """Each file's first bytes decode in ``input.encoding`` and its header has the mapped
    columns; a single file that is only a header is refused."""
    files = data_files(path) if os.path.isdir(path) else [Path(path)]
    if not any(f.stat().st_size for f in files):
        raise InputError(f"{path}: no data rows (the folder's files are empty)")
    for f in files:
        with open(f, "rb") as fh:
            sample = fh.read(SAMPLE_BYTES)
        if sample:
            lines = _decode_sample(str(f), sample, len(sample) < SAMPLE_BYTES, cfg)
            if len(files) == 1 and len(sample) < SAMPLE_BYTES and not any(
                    line.strip() for line in lines[1:]):
                raise InputError(f"{path}: no data rows (only a header)")


def _decode_sample(name: str, sample: bytes, whole: bool, cfg: Config) -> list[str]:
    """The sample's lines, after checking they decode and that the header maps."""
    inp = cfg["input"]
    encoding = codecs.lookup(inp["encoding"]).name
    try:
        text = codecs.getincrementaldecoder(encoding)("strict").decode(sample, final=whole)
    except UnicodeDecodeError as exc:
        raise InputError(_encoding_message(name, sample, exc, cfg)) from None
    lines = text.lstrip("\ufeff").splitlines()
    if not whole and lines:
        lines = lines[:-1]  # may be cut short
    header = next(csv.reader(lines[:1], delimiter=inp["csv_delimiter"]), [])
    other = [d for d in ",;\t|" if len(header) == 1 and d in header[0]]
    if other:
        shown = "tab" if other[0] == "\t" else other[0]
        raise InputError(f"{name}: the header is one column that looks {shown!r}-separated "
                         f"({header[0][:60]}...); set input.csv_delimiter, e.g. --set "
                         f"\"input.csv_delimiter={other[0]}\"")
    map_columns(name, header, cfg)
    return lines


def _encoding_message(name: str, sample: bytes, exc: UnicodeDecodeError, cfg: Config) -> str:
    """Name the data row and column of the first undecodable byte, as the Spark check does."""
    inp = cfg["input"]
    hint = "set input.encoding, e.g. --set input.encoding=latin-1"
    if codecs.lookup(inp["encoding"]).name.startswith(("utf-16", "utf-32")):
        return f"{name}: not valid {inp['encoding']} text; {hint}"
    row = sample[:exc.start].count(b"\n")
    lines = sample.split(b"\n")
    header = next(csv.reader([lines[0].decode(inp["encoding"], "replace").lstrip("\ufeff")],
                             delimiter=inp["csv_delimiter"]), [])
    if row == 0:
        return f"{name}: not valid {inp['encoding']} text (in the header row); {hint}"
    fields = next(csv.reader([lines[row].decode(inp["encoding"], "replace")],
                             delimiter=inp["csv_delimiter"]), [])
    source = next((header[i] for i, v in enumerate(fields) if "\ufffd" in v and i < len(header)),
                  None)
    cols = {str(v).strip().lower(): k for k, v in inp["columns"].items() if v}
    column = cols.get(str(source).strip().lower(), source)
    return (f"{name}: not valid {inp['encoding']} text (first at data row {row}, column "
            f"{column}); {hint}")


def check_lakehouse(root: str) -> None:
    """A local lakehouse folder is, or can be made, a writable folder."""
    if is_uri(root):
        return
    target = Path(os.path.abspath(root))
    existing = target
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{root}: cannot be the lakehouse folder: {existing} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".custseg-write-check-"):
            pass
    except OSError as exc:
        raise InputError(f"{root}: the lakehouse folder cannot be written ({existing}: "
                         f"{exc.strerror})") from None


def check_stage_inputs(root: str, stages: Sequence[str]) -> None:
    """The table the first stage reads exists (later stages get theirs from earlier ones)."""
    need = _NEEDS.get(stages[0]) if stages else None
    if need is None or is_uri(root):
        return
    path = table_path(root, need[0], need[1])
    if not os.path.isdir(os.path.join(path, "_delta_log")):
        raise InputError(f"{path}: {need[2]}")


def check(stages: Sequence[str], root: str, input_path: str | None, as_of: str | None,
          cfg: Config) -> None:
    """Every check above that applies to this command."""
    if as_of:
        parse_as_of(as_of)
    check_lakehouse(root)
    if "ingest" in stages and input_path:
        check_input(input_path, cfg)
    check_stage_inputs(root, stages)
