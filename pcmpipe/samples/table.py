"""The sample table: the join of several cached modalities into training samples (docs/design.md "Training
samples"), one rule for both loading modes.

The *base* modalities are the ones whose rows carry every other modality's key column (`find_base`). A sample is
a base row: first every row of the first base modality in cache order, then the rows of each later one whose key
no earlier base modality has (e.g. a spoken caption whose written caption is missing). Modality m of a sample is
its own row where m is the sample's base modality, else the row of m whose key equals the sample's value of m's
key column; absent where there is none (`present` False, row 0 as a placeholder the losses mask).

Keys are matched as 64-bit hashes (`KeyIndex`: 16 bytes a row whatever the key's length), so a split streamed
shard by shard never holds the keys themselves. Where the strings are held (in memory), every match is also
checked on them: a hash collision can never join two different keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pcmpipe.errors import UserError


def hash_keys(keys: np.ndarray) -> np.ndarray:
    """Deterministic 64-bit hashes of string keys (pandas' SipHash with its fixed key; no PYTHONHASHSEED)."""
    import pandas as pd

    return pd.util.hash_array(np.asarray(keys, dtype=object), categorize=False).view(np.uint64)


@dataclass
class KeyIndex:
    """Keys of one cache -> row numbers, as sorted 64-bit hashes; with `keys` (the strings, in row order) every
    match is checked exactly."""

    hashes: np.ndarray  # uint64 [N], sorted
    rows: np.ndarray  # int64 [N], the row (cache order) of each hash
    keys: np.ndarray | None = None  # str [N] in row order, where held

    @classmethod
    def build(cls, parts: list[np.ndarray], where: str, keys: np.ndarray | None = None) -> KeyIndex:
        """From the keys' hashes (`hash_keys`), part by part (shard by shard: the keys need not be held)."""
        h = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
        order = np.argsort(h, kind="stable")
        index = cls(h[order], order.astype(np.int64), keys)
        index._check_unique(where)
        return index

    @classmethod
    def of(cls, keys: np.ndarray, where: str) -> KeyIndex:
        """The index of keys held in memory (matches checked on the strings)."""
        keys = np.asarray(keys)
        return cls.build([hash_keys(keys)], where, keys)

    def _check_unique(self, where: str) -> None:
        same = np.flatnonzero(self.hashes[1:] == self.hashes[:-1])
        if not same.size:
            return
        if self.keys is None:  # keys are unique per cache, so equal hashes are a collision (about 3e-4 at 1e8 keys)
            raise UserError(f"two keys of {where} share a 64-bit hash; load it in memory (--set stream=false)")
        a, b = (str(self.keys[self.rows[i]]) for i in (same[0], same[0] + 1))
        if a == b:  # the cache writer refuses a repeated id, so this cache was not written by pcmpipe
            raise UserError(f"key {a!r} appears twice in {where}; keys must be unique")
        raise UserError(f"keys {a!r} and {b!r} of {where} share a 64-bit hash; rename one of them")

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, found) per key: row 0 where absent (the placeholder row)."""
        if self.hashes.size == 0:
            return np.zeros(len(keys), np.int64), np.zeros(len(keys), bool)
        h = hash_keys(keys)
        pos = np.clip(np.searchsorted(self.hashes, h), 0, self.hashes.size - 1)
        found = self.hashes[pos] == h
        rows = self.rows[pos]
        if self.keys is not None:
            found &= self.keys[rows] == np.asarray(keys)
        return np.where(found, rows, 0), found


def key_column(columns: dict[str, np.ndarray], key: str) -> np.ndarray:
    """A cache's values of its key column (`id` where the key column is not stored apart)."""
    return columns[key] if key in columns else columns["id"]


@dataclass
class Carrier:
    """What `find_base` asks of a modality (its key, the columns its rows carry), from a manifest alone."""

    key: str
    cols: set[str]
    rows: int = 1
    directory: str = ""

    def carries(self, column: str) -> bool:
        return column in self.cols


def find_base(mods: dict[str, Any]) -> list[str]:
    """Modalities whose rows carry every other modality's key column; those sharing the first one's key.

    `mods`: m -> anything with `key`, `carries(column)`, `rows` and `directory` (ModalityData, Carrier).
    Flickr8k I,T,S -> [T, S] (both keyed by caption_id, both carry image_id); CUB I,T,A,C -> [T];
    I,C -> [I]. Raises UserError when no modality links to all others.
    """
    order = list(mods)
    cands = [m for m in order if all(mods[m].carries(mods[o].key) for o in order if o != m)]
    if not cands:
        empty = [m for m, d in mods.items() if getattr(d, "rows", 1) == 0]
        if empty:  # an empty cache carries no columns to join on: say so, not that the keys do not link
            d = mods[empty[0]]
            raise UserError(
                f"cache {d.directory} has no rows ({', '.join(empty)}): this split is empty; extract a dataset "
                "whose split holds samples (synthetic CUB: --images 2 or more) or train on other splits"
            )
        keys = ", ".join(f"{m}: {d.key}" for m, d in mods.items())
        raise UserError(f"cannot join modalities {','.join(order)}: no cache's rows carry every other key ({keys})")
    first_key = mods[cands[0]].key
    return [m for m in cands if mods[m].key == first_key]


@dataclass
class Block:
    """The samples a block of base rows contributes: `kept` [k] (its rows that are samples, in order) and, per
    modality, each sample's row (cache order, 0 where absent) and presence."""

    kept: np.ndarray
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    present: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Join:
    """The join's rule over indexes of the modalities' keys (see module docstring).

    `keys`: m -> its key column, for every modality in the split's order. `indexes`: m -> KeyIndex of m's keys,
    for every modality a block may look up: all but the first base modality, and that one too when there are
    several base modalities (a later one's rows are samples only where the first lacks their key)."""

    base: list[str]
    keys: dict[str, str]
    indexes: dict[str, KeyIndex]
    key: str = field(init=False)  # the base key column (e.g. caption_id)

    def __post_init__(self) -> None:
        self.key = self.keys[self.base[0]]

    def lookup_columns(self) -> set[str]:
        """The columns of a base block the join reads: each modality's key column (and `id`, its fallback)."""
        return {"id", *self.keys.values()}

    def block(self, b: str, columns: dict[str, np.ndarray], offset: int = 0) -> Block:
        """The samples of consecutive rows of base modality `b` (a shard, or the whole cache), the first of them
        at row `offset` of b's cache; `columns` holds their `lookup_columns()`."""
        keys = key_column(columns, self.key)
        keep = np.ones(len(keys), bool)
        for e in self.base[: self.base.index(b)]:
            keep &= ~self.indexes[e].lookup(keys)[1]
        kept = np.flatnonzero(keep)
        out = Block(kept)
        for m, key in self.keys.items():
            if m == b:
                out.rows[m], out.present[m] = offset + kept, np.ones(len(kept), bool)
            else:
                out.rows[m], out.present[m] = self.indexes[m].lookup(key_column(columns, key)[kept])
        return out
