"""The dataset spec: a small YAML file that tells pcmpipe how to read a user's own data.

    # data/mydata/dataset.yaml  ->  pcmpipe extract --dataset mydata --root data/mydata
    format: table                     # table (CSV, TSV, JSONL, Parquet) | hf | webdataset
    files: captions.csv               # one file (or glob) for every split ...
    split_column: split               # ... whose rows say their split (train, val | validation | dev, test)
    # files: {train: train.csv, val: val.csv, test: test.csv}    ... or one file (or glob) per split
    modalities:                       # each modality declared once: NAME: KIND:COLUMN (id column: `id`)
      I: {kind: image, column: file, id: image_id}
      T: {kind: text, column: caption, id: caption_id}
    links: [class_id]                 # more id columns rows carry where they are one value per row id

Kinds: image and audio (a file path relative to the spec's folder, or the bytes of an HF/webdataset
sample), text (a string) and vector (a list of numbers, or a string of them). The modality's `id` column
becomes its cache key; any other declared id column that has one value per key becomes a link, so captions
that name their image join the image rows in training.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pcmpipe.errors import UserError

SPEC_FILE = "dataset.yaml"
FORMATS = ("table", "hf", "webdataset")
KINDS = ("image", "text", "audio", "vector")
# split names users' data carry -> the cache's (train, val, test)
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}
NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")  # as import-features: no "." (it separates the heads' submodule names)
_KEYS = {"format", "files", "path", "builder", "split_column", "id", "modalities", "links"}


@dataclass(frozen=True)
class ModalitySpec:
    name: str
    kind: str  # image | text | audio | vector
    column: str
    id: str  # the id column: the modality's cache key


@dataclass(frozen=True)
class DatasetSpec:
    where: Path  # the spec file (for messages) ...
    root: Path  # ... and the folder relative paths start from
    format: str
    modalities: dict[str, ModalitySpec]
    files: dict[str, list[str]] = field(default_factory=dict)  # split (or "*": every split) -> files / globs
    path: str | None = None  # hf: a load_from_disk folder or the data_dir of `builder`
    builder: str | None = None  # hf: parquet | imagefolder | audiofolder | csv | json
    split_column: str | None = None
    links: tuple[str, ...] = ()

    @property
    def id_columns(self) -> list[str]:
        """Every column that holds ids: the modalities' keys, then the declared links (in order, once each)."""
        cols = [m.id for m in self.modalities.values()] + list(self.links)
        return list(dict.fromkeys(cols))


def split_name(value: Any, where: str) -> str:
    """A split value of the user's data -> train | val | test (UserError naming the accepted ones)."""
    name = SPLIT_ALIASES.get(str(value).strip().lower())
    if name is None:
        raise UserError(f"{where}: unknown split {value!r}; use train, val (or validation, dev) or test")
    return name


def find_spec(root: Path) -> Path | None:
    """The spec a --root names: the file itself, or <root>/dataset.yaml; None if neither exists."""
    if root.is_file() and root.suffix in (".yaml", ".yml"):
        return root
    candidate = root / SPEC_FILE
    return candidate if candidate.is_file() else None


def load_spec(path: Path) -> DatasetSpec:
    """Read and check a spec file -> DatasetSpec (UserError naming the file and the key at fault)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read dataset spec {path}: {str(e).splitlines()[0]}") from None
    return parse_spec(doc, path)


def parse_spec(doc: Any, path: Path) -> DatasetSpec:
    where = str(path)
    if not isinstance(doc, dict):
        raise UserError(f"{where}: a dataset spec is a mapping (format, files, modalities, ...)")
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(_KEYS))}")
    fmt = doc.get("format") or _infer_format(doc)
    if fmt not in FORMATS:
        raise UserError(f"{where}: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    default_id = str(doc.get("id") or ("__key__" if fmt == "webdataset" else "id"))
    mods = doc.get("modalities")
    if not isinstance(mods, dict) or not mods:
        raise UserError(f"{where}: modalities: declare at least one, e.g. T: text:caption")
    modalities = {str(n): _modality(str(n), v, default_id, where) for n, v in mods.items()}
    files = _files(doc.get("files"), where)
    if fmt != "hf" and not files:
        raise UserError(f"{where}: files: name the {fmt} file(s), one for all splits or one per split")
    if fmt == "hf" and not doc.get("path"):
        raise UserError(f"{where}: path: a datasets.save_to_disk folder, or the data_dir of `builder`")
    split_column = doc.get("split_column")
    if "*" in files and not split_column:
        raise UserError(f"{where}: one file for every split needs split_column (or give files per split)")
    links = doc.get("links") or []
    if not isinstance(links, list):
        raise UserError(f"{where}: links is a list of column names, e.g. [class_id]")
    return DatasetSpec(
        where=path,
        root=path.parent,
        format=fmt,
        modalities=modalities,
        files=files,
        path=doc.get("path"),
        builder=doc.get("builder"),
        split_column=str(split_column) if split_column else None,
        links=tuple(str(c) for c in links),
    )


def _infer_format(doc: dict) -> str:
    if doc.get("path") or doc.get("builder"):
        return "hf"
    names = [f for fs in _files(doc.get("files"), "").values() for f in fs]
    return "webdataset" if names and all(".tar" in n for n in names) else "table"


def _files(value: Any, where: str) -> dict[str, list[str]]:
    if value is None:
        return {}
    if isinstance(value, (str, list)):
        return {"*": [str(v) for v in ([value] if isinstance(value, str) else value)]}
    if isinstance(value, dict):
        out: dict[str, list[str]] = {}
        for split, v in value.items():
            name = split_name(split, f"{where}: files")
            out.setdefault(name, []).extend(str(x) for x in ([v] if isinstance(v, str) else v))
        return out
    raise UserError(f"{where}: files is a file name, a list of them, or {{split: file(s)}}")


def _modality(name: str, value: Any, default_id: str, where: str) -> ModalitySpec:
    if not NAME_RE.match(name):
        raise UserError(f"{where}: invalid modality name {name!r}; use letters, digits, '_', '-'")
    if isinstance(value, str):  # the short form KIND:COLUMN
        kind, sep, column = value.partition(":")
        value = {"kind": kind, "column": column if sep else ""}
    if not isinstance(value, dict):
        raise UserError(f"{where}: modality {name}: write KIND:COLUMN or {{kind, column, id}}")
    kind, column = str(value.get("kind", "")), str(value.get("column") or "")
    if kind not in KINDS:
        raise UserError(f"{where}: modality {name}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not column:
        raise UserError(f"{where}: modality {name}: name its column, e.g. {name}: {kind}:COLUMN")
    extra = sorted(set(value) - {"kind", "column", "id"})
    if extra:
        raise UserError(f"{where}: modality {name}: unknown key(s) {', '.join(extra)}; valid: kind, column, id")
    return ModalitySpec(name, kind, column, str(value.get("id") or default_id))
