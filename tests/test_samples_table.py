"""The one join (pcmpipe.samples.table): hashed keys give exactly the sample table the in-memory join built with
sorted strings (order included), every in-memory match is checked on the strings, and a hash collision is refused
in one line rather than joining two keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pcmpipe.errors import UserError
from pcmpipe.samples import KeyIndex, ModalityData, join
from pcmpipe.samples import table as table_module


def _string_join(mods: dict[str, ModalityData], base: list[str]) -> tuple[dict, dict]:
    """The in-memory join as it was built before hashed keys (np.isin + argsort/searchsorted on the strings)."""
    key = mods[base[0]].key
    needed = sorted({d.key for d in mods.values()} | {key})
    table: dict[str, list[np.ndarray]] = {c: [] for c in needed}
    seen = np.array([], dtype=str)
    for m in base:
        d = mods[m]
        keys = d.key_values()
        new = ~np.isin(keys, seen)
        for c in needed:
            table[c].append((keys if c == key else d.columns[c])[new])
        seen = np.concatenate([seen, keys[new]])
    samples = {c: np.concatenate(v) for c, v in table.items()}
    idx, present = {}, {}
    for m, d in mods.items():
        hay, needles = d.key_values(), samples[d.key]
        if hay.size == 0:
            idx[m], present[m] = np.zeros(len(needles), np.int64), np.zeros(len(needles), bool)
            continue
        order = np.argsort(hay, kind="stable")
        pos = np.clip(np.searchsorted(hay[order], needles), 0, len(hay) - 1)
        rows = order[pos]
        found = hay[rows] == needles
        idx[m], present[m] = np.where(found, rows, 0), found
    return idx, present


def _modality(name: str, key: str, ids: list[str], links: dict[str, list[str]]) -> ModalityData:
    columns = {"id": np.array(ids, dtype=str), key: np.array(ids, dtype=str)}
    columns |= {c: np.array(v, dtype=str) for c, v in links.items()}
    return ModalityData(name, key, columns, torch.zeros(len(ids), 1), "fp", f"cache/{name}")


@st.composite
def _split(draw):
    """Images with 1-3 captions each (written and spoken, each losing some), classes of the images: in cache
    orders that are not sorted, with keys that sort differently as strings and as hashes."""
    n = draw(st.integers(1, 12))
    images = [f"im{draw(st.integers(0, 10**6))}-{i}" for i in range(n)]
    classes = {im: f"c{draw(st.integers(0, 3))}" for im in images}
    captions = [f"{im}#{c}" for im in images for c in range(draw(st.integers(1, 3)))]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mods = {}
    for m in ("T", "S"):
        ids = [c for c in captions if rng.random() > draw(st.sampled_from([0.0, 0.3]))]
        ids = [ids[i] for i in rng.permutation(len(ids))]
        mods[m] = _modality(m, "caption_id", ids, {"image_id": [c.split("#")[0] for c in ids],
                                                   "class_id": [classes[c.split("#")[0]] for c in ids]})  # fmt: skip
    kept = [im for im in images if rng.random() > 0.2]
    mods["I"] = _modality("I", "image_id", kept, {"class_id": [classes[im] for im in kept]})
    names = sorted(set(classes.values()))
    mods["C"] = _modality("C", "class_id", names[::-1], {})
    return mods


@settings(max_examples=150, deadline=None)
@given(_split())
def test_hashed_join_gives_the_string_join_sample_table(mods):
    d = join("train", mods)
    idx, present = _string_join(mods, d.base)
    for m in mods:
        assert d.idx[m].tolist() == idx[m].tolist(), m
        assert d.present[m].tolist() == present[m].tolist(), m


def test_in_memory_matches_are_checked_on_the_strings(monkeypatch):
    """A key of another cache whose hash equals a present key's (a collision) is absent, not joined."""
    real = table_module.hash_keys
    monkeypatch.setattr(table_module, "hash_keys", lambda keys: real(["a" if k == "z" else k for k in keys]))
    index = KeyIndex.of(np.array(["a", "b"]), "cache/I")
    rows, found = index.lookup(np.array(["b", "z", "a"]))
    assert found.tolist() == [True, False, True] and rows.tolist() == [1, 0, 0]
    streamed = KeyIndex.build([table_module.hash_keys(np.array(["a", "b"]))], "cache/I")  # no strings held
    assert streamed.lookup(np.array(["z"]))[1].tolist() == [True]  # what the streamed mode cannot see


def test_a_collision_within_a_cache_is_refused_in_one_line(monkeypatch):
    real = table_module.hash_keys
    monkeypatch.setattr(table_module, "hash_keys", lambda keys: real(["a" if k == "z" else k for k in keys]))
    with pytest.raises(UserError, match="keys 'a' and 'z' of cache/I share a 64-bit hash"):
        KeyIndex.of(np.array(["a", "b", "z"]), "cache/I")
    with pytest.raises(UserError, match=r"share a 64-bit hash; load it in memory \(--set stream=false\)"):
        KeyIndex.build([table_module.hash_keys(np.array(["a", "z"]))], "cache/I")
    with pytest.raises(UserError, match="key 'b' appears twice in cache/I"):
        KeyIndex.of(np.array(["b", "a", "b"]), "cache/I")
