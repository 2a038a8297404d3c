"""Your own data: a table, a Hugging Face dataset or webdataset shards, described by a `dataset.yaml` spec.

    ds = open_dataset("mydata", "data/mydata")          # reads data/mydata/dataset.yaml
    ds.modalities                                         # as the spec declares them, e.g. ('I', 'T')
    ds.records("T", "train")                              # list[Record], sorted by id, like Flickr8k's

The records go through the same extraction as the paper's datasets: readers' error handling (.errors.jsonl,
--strict), the cache, resume and fingerprints. The spec format: `pcmpipe.datasets.generic.spec` and
docs/datasets.md ("Your own data").
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pcmpipe.datasets.base import Dataset, Record
from pcmpipe.datasets.generic.records import Row, build_records
from pcmpipe.datasets.generic.spec import NAME_RE, SPEC_FILE, DatasetSpec, find_spec, load_spec
from pcmpipe.errors import UserError


class GenericDataset(Dataset):
    """A user's dataset, read as its spec says. `kind(m)` is the spec's ('vector' modalities: None)."""

    def __init__(self, name: str, spec: DatasetSpec) -> None:
        super().__init__(spec.root)
        if not NAME_RE.match(name):
            raise UserError(f"invalid dataset name {name!r}; use letters, digits, '_', '-' (it names a cache folder)")
        self.name, self.spec = name, spec
        self.modalities = tuple(spec.modalities)

    def key(self, modality: str) -> str:
        self._check_modality(modality)
        return self.spec.modalities[modality].id

    def kind(self, modality: str) -> str | None:
        self._check_modality(modality)
        kind = self.spec.modalities[modality].kind
        return None if kind == "vector" else kind

    @cached_property
    def _records_by_part(self) -> dict[tuple[str, str], list[Record]]:
        return build_records(self.spec, self._rows())

    def _rows(self) -> list[Row]:
        if self.spec.format == "table":
            from pcmpipe.datasets.generic.table import table_rows

            return table_rows(self.spec)
        if self.spec.format == "hf":
            from pcmpipe.datasets.generic.hf import hf_rows

            return hf_rows(self.spec)
        from pcmpipe.datasets.generic.wds import wds_rows

        return wds_rows(self.spec)

    def _records(self, modality: str, split: str) -> list[Record]:
        return list(self._records_by_part.get((modality, split), []))


def open_generic(name: str, root: Path | str) -> GenericDataset:
    """The dataset `name` whose spec is `root` (a YAML file) or `root`/dataset.yaml."""
    root = Path(root).expanduser()
    path = find_spec(root)
    if path is None:
        raise UserError(
            f"unknown dataset {name!r}: no {root / SPEC_FILE}; use flickr8k or cub, or describe your own data "
            "in a dataset.yaml (docs/datasets.md, 'Your own data') and pass its folder as --root"
        )
    return GenericDataset(name, load_spec(path))


__all__ = ["GenericDataset", "SPEC_FILE", "open_generic"]
