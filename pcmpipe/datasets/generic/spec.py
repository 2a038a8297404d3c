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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from pcmpipe.errors import UserError
from pcmpipe.readback import read_yaml, validate

SPEC_FILE = "dataset.yaml"
FORMATS = ("table", "hf", "webdataset")
KINDS = ("image", "text", "audio", "vector")
# split names users' data carry -> the cache's (train, val, test)
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}
NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")  # as import-features: no "." (it separates the heads' submodule names)
# a spec is a few lines nested three deep (a list of 10^5 shard names is still far below these); anything
# larger is no spec, or a crafted one, whose validation alone would take minutes
MAX_SPEC_BYTES = 1 << 24
MAX_SPEC_DEPTH = 16
MAX_SPEC_NODES = 1_000_000


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


class ModalityEntry(BaseModel):
    """One modality of a dataset spec, in its long form (the short form `NAME: KIND:COLUMN` reads the same)."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    kind: str = Field(
        description="image or audio (a file path relative to the spec's folder, or the bytes of an HF/webdataset "
        "sample), text (a string) or vector (a list of numbers, or a string of them)"
    )
    column: str = Field("", description="the column (table, HF) or member extension (webdataset) it reads")
    id: str | None = Field(None, description="the id column: the modality's cache key (default: the spec's `id`)")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        if isinstance(value, str):  # KIND:COLUMN
            kind, sep, column = value.partition(":")
            return {"kind": kind, "column": column if sep else ""}
        return value

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        return kind


class DatasetSpecFile(BaseModel):
    """dataset.yaml as written (see the module docstring); `parse_spec` turns it into a `DatasetSpec`."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    format: Literal["table", "hf", "webdataset"] | None = Field(
        None, description="table (CSV, TSV, JSONL, Parquet), hf or webdataset; default: from `files` / `path`"
    )
    files: dict[str, list[str]] = Field(
        default_factory=dict,
        description="a file or glob for every split, a list of them, or {split: file(s)}; read as {split: [files]} "
        "with '*' for every split",
    )
    path: str | None = Field(None, description="hf: a save_to_disk folder, or the data folder of `builder`")
    builder: str | None = Field(None, description="hf: parquet | imagefolder | audiofolder | csv | json")
    split_column: str | None = Field(None, description="the column whose values name each row's split")
    id: str | None = Field(None, description="the default id column (default: `id`; webdataset: `__key__`)")
    modalities: dict[str, ModalityEntry] = Field(
        default_factory=dict, description="NAME: KIND:COLUMN or NAME: {kind, column, id}, each modality once"
    )
    links: list[str] = Field(default_factory=list, description="more id columns rows carry (e.g. class_id)")

    @field_validator("modalities", "links", mode="before")
    @classmethod
    def _empty(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:  # `links:` with nothing after it
            return {} if info.field_name == "modalities" else []
        return value

    @field_validator("files", mode="before")
    @classmethod
    def _files_by_split(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, str | list):
            return {"*": [value] if isinstance(value, str) else value}
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        return value


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
    doc = read_yaml(path, "dataset spec", max_bytes=MAX_SPEC_BYTES, max_depth=MAX_SPEC_DEPTH, max_nodes=MAX_SPEC_NODES)
    return parse_spec(doc, path)


def parse_spec(doc: Any, path: Path) -> DatasetSpec:
    where = str(path)
    if not isinstance(doc, dict):
        raise UserError(f"{where}: a dataset spec is a mapping (format, files, modalities, ...)")
    unknown = sorted(str(k) for k in set(doc) - set(DatasetSpecFile.model_fields))
    if unknown:
        valid = ", ".join(sorted(DatasetSpecFile.model_fields))
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {valid}")
    spec = validate(DatasetSpecFile, doc, f"dataset spec {where}")
    fmt = spec.format or _infer_format(spec)
    default_id = spec.id or ("__key__" if fmt == "webdataset" else "id")
    if not spec.modalities:
        raise UserError(f"{where}: modalities: declare at least one, e.g. T: text:caption")
    modalities = {n: _modality(n, v, default_id, where) for n, v in spec.modalities.items()}
    files = _files(spec.files, where)
    if fmt != "hf" and not files:
        raise UserError(f"{where}: files: name the {fmt} file(s), one for all splits or one per split")
    if fmt == "hf" and not spec.path:
        raise UserError(f"{where}: path: a datasets.save_to_disk folder, or the data_dir of `builder`")
    if "*" in files and not spec.split_column:
        raise UserError(f"{where}: one file for every split needs split_column (or give files per split)")
    return DatasetSpec(
        where=path,
        root=path.parent,
        format=fmt,
        modalities=modalities,
        files=files,
        path=spec.path,
        builder=spec.builder,
        split_column=spec.split_column or None,
        links=tuple(spec.links),
    )


def _infer_format(spec: DatasetSpecFile) -> str:
    if spec.path or spec.builder:
        return "hf"
    names = [f for fs in spec.files.values() for f in fs]
    return "webdataset" if names and all(".tar" in n for n in names) else "table"


def _files(value: dict[str, list[str]], where: str) -> dict[str, list[str]]:
    """{split as written: files} -> {train | val | test | '*': files}."""
    out: dict[str, list[str]] = {}
    for split, names in value.items():
        out.setdefault("*" if split == "*" else split_name(split, f"{where}: files"), []).extend(names)
    return out


def _modality(name: str, value: ModalityEntry, default_id: str, where: str) -> ModalitySpec:
    if not NAME_RE.match(name):
        raise UserError(f"{where}: invalid modality name {name!r}; use letters, digits, '_', '-'")
    if not value.column:
        raise UserError(f"{where}: modality {name}: name its column, e.g. {name}: {value.kind}:COLUMN")
    return ModalitySpec(name, value.kind, value.column, value.id or default_id)
