"""Tables: CSV, TSV, JSONL or Parquet files, one row per sample.

CSV and TSV cells are read as strings (ids such as '007' stay as written; vectors are strings of numbers);
JSONL and Parquet keep their types (a vector column can be a list). The file type follows the extension.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from pcmpipe.datasets.generic.records import Row, row_split
from pcmpipe.datasets.generic.spec import DatasetSpec
from pcmpipe.errors import UserError
from pcmpipe.readback import parse_json

SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet")


def expand(spec: DatasetSpec, patterns: list[str]) -> list[Path]:
    """File names or globs, relative to the spec's folder -> existing files, sorted (UserError if one matches none)."""
    out: list[Path] = []
    for pattern in patterns:
        base = Path(pattern).expanduser()
        if any(ch in pattern for ch in "*?["):
            matches = sorted(base.parent.glob(base.name) if base.is_absolute() else spec.root.glob(pattern))
        else:
            full = base if base.is_absolute() else spec.root / base
            matches = [full] if full.is_file() else []
        if not matches:
            raise UserError(f"{spec.where}: files: {pattern} matches no file under {spec.root}")
        out.extend(matches)
    return out


def read_table(path: Path) -> list[dict[str, Any]]:
    """One file -> its rows as dicts (UserError for an unknown type or an unreadable file)."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            with open(path, newline="", encoding="utf-8-sig") as f:
                return _csv_rows(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","), path)
        if suffix in (".jsonl", ".ndjson"):
            with open(path, encoding="utf-8-sig") as f:
                return [_json_row(line, path, n) for n, line in enumerate(f, 1) if line.strip()]
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
    except UserError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"cannot read table {path}: {type(e).__name__}: {str(e)[:200]}") from None
    except Exception as e:  # pyarrow's errors for a damaged Parquet file
        detail = (str(e).splitlines() or [""])[0][:200]
        raise UserError(f"cannot read table {path}: {type(e).__name__}: {detail}") from None
    raise UserError(f"table {path}: unknown file type {suffix!r}; use one of {', '.join(SUFFIXES)}")


def _csv_rows(reader: csv.DictReader, path: Path) -> list[dict[str, Any]]:
    """The rows of a CSV/TSV file. A row with more values than the header has columns is refused, since its
    values no longer sit under their column names (an unquoted delimiter inside a caption, most often); empty
    surplus fields (a trailing delimiter) are dropped."""
    rows = []
    for row in reader:
        surplus = row.pop(None, None)  # DictReader's key for fields past the header
        if surplus is not None and any(v.strip() for v in surplus):
            named = len(reader.fieldnames or ())
            raise UserError(
                f"{path}:{reader.line_num}: {named + len(surplus)} fields where the header names {named}; quote "
                "a value that holds the delimiter"
            )
        rows.append(row)
    return rows


def _json_row(line: str, path: Path, lineno: int) -> dict[str, Any]:
    row = parse_json(line, f"{path}:{lineno}")
    if not isinstance(row, dict):
        raise UserError(f"{path}:{lineno}: each line must be a JSON object, got {type(row).__name__}")
    return row


def table_rows(spec: DatasetSpec) -> list[Row]:
    """Every row of every table, with its split (the table's own, or the split column's)."""
    rows: list[Row] = []
    for split, patterns in spec.files.items():
        for path in expand(spec, patterns):
            for n, values in enumerate(read_table(path), 1):
                where = f"{path}:{n}"
                rows.append(Row(row_split(spec, split, values, where), values, where))
    return rows
