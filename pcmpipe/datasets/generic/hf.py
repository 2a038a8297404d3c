"""Hugging Face `datasets`: a `save_to_disk` folder, or a builder (parquet, imagefolder, audiofolder, csv, json)
over a local data folder. A DatasetDict's splits are the splits (validation -> val); a single Dataset needs
`split_column`.

Image and audio columns are never decoded by `datasets` (which would need its optional decoders): they are
read with `decode=False`, and each record carries an `HFCell`, which the extraction's decoding workers open
(the bytes stored in the Arrow file, or the file they name). The other columns are read once, up front.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pcmpipe.datasets.generic.records import Row, row_split
from pcmpipe.datasets.generic.spec import DatasetSpec
from pcmpipe.errors import UserError

BUILDERS = ("parquet", "imagefolder", "audiofolder", "csv", "json")


@dataclass(frozen=True)
class HFCell:
    """One image or audio cell of a `datasets.Dataset` (the dataset is memory-mapped, so holding it is cheap)."""

    dataset: Any
    row: int
    column: str
    root: Path

    def open(self) -> BinaryIO:
        value = self.dataset[self.row][self.column]
        if isinstance(value, dict) and value.get("bytes"):
            return io.BytesIO(value["bytes"])
        path = value.get("path") if isinstance(value, dict) else value
        if not path:
            raise OSError(f"no bytes and no path in column {self.column}")
        if not isinstance(path, str):  # a column of numbers or lists declared as image or audio
            raise OSError(f"column {self.column} holds a {type(path).__name__}, not the bytes or path of a file")
        full = Path(path) if Path(path).is_absolute() else self.root / path
        return open(full, "rb")

    def describe(self) -> str:
        return f"row {self.row} column {self.column}"


def _load(spec: DatasetSpec) -> dict[str, Any]:
    """-> {split name as the data has it: Dataset}."""
    import datasets

    assert spec.path is not None  # parse_spec requires it for format hf
    folder = Path(spec.path).expanduser()
    folder = folder if folder.is_absolute() else spec.root / folder
    if not folder.is_dir():
        raise UserError(f"{spec.where}: path {folder} is not a folder")
    try:
        if spec.builder:
            if spec.builder not in BUILDERS:
                raise UserError(f"{spec.where}: builder must be one of {', '.join(BUILDERS)}, got {spec.builder!r}")
            loaded = datasets.load_dataset(spec.builder, data_dir=str(folder))
        else:
            loaded = datasets.load_from_disk(str(folder))
    except UserError:
        raise
    except Exception as e:  # not a save_to_disk folder, no data files for the builder, a damaged Arrow file
        msg = str(e).splitlines()[0][:200] if str(e) else ""
        how = "a folder of data files for builder " + spec.builder if spec.builder else "a save_to_disk folder"
        raise UserError(
            f"cannot load the Hugging Face dataset at {folder} ({type(e).__name__}: {msg}); need {how}"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        return dict(loaded)
    if not spec.split_column:
        raise UserError(f"{spec.where}: {folder} holds one Dataset without splits; name its split_column")
    return {"*": loaded}


def hf_rows(spec: DatasetSpec) -> list[Row]:
    import datasets

    media = [m.column for m in spec.modalities.values() if m.kind in ("image", "audio")]
    rows: list[Row] = []
    for given, ds in _load(spec).items():
        for col in media:
            feature = ds.features.get(col)
            if isinstance(feature, datasets.Image):
                ds = ds.cast_column(col, datasets.Image(decode=False))
            elif isinstance(feature, datasets.Audio):
                ds = ds.cast_column(col, datasets.Audio(decode=False))
        plain = [c for c in ds.column_names if c not in media]
        table = ds.select_columns(plain).to_list() if plain else [{} for _ in range(len(ds))]
        for i, values in enumerate(table):
            where = f"{spec.path} split {given} row {i}"
            cells = {col: HFCell(ds, i, col, spec.root) for col in media if col in ds.column_names}
            rows.append(Row(row_split(spec, given, values, where), {**values, **cells}, where))
    return rows
