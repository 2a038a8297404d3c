"""Extraction from a dataset that offers its records by shard (pcmpipe.extract.record_source): the cache a listing
gives, one shard's records at a time, and a resume that keeps what was written before an interruption."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from extraction import extract

from pcmpipe.cache import cache_dir, open_cache
from pcmpipe.datasets import DATASETS, Flickr8k
from pcmpipe.datasets.synthetic import synth
from pcmpipe.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")
TEXT = {"backbones": {"text": "clip-tiny-text"}, "weights": {"text": "random:0"}, "workers": 0, "batch_size": 2}


class Shard:
    def __init__(self, name: str, records: list, fail: bool = False):
        self.name, self.rows, self._records, self.fail = name, len(records), records, fail

    def records(self) -> Iterator:
        for i, r in enumerate(self._records):
            if self.fail and i == 1:
                raise KeyboardInterrupt  # the process dies in the middle of this shard
            yield r


class ShardedFlickr8k(Flickr8k):
    fail_at: int | None = None  # index of the shard that breaks off
    largest_chunk = 0

    def record_shards(self, modality: str, split: str) -> list[Shard]:
        records = Flickr8k.records(self, modality, split)
        return [Shard(f"{i}", records[i : i + 4], fail=i // 4 == self.fail_at) for i in range(0, len(records), 4)]

    def records(self, modality: str, split: str) -> list:
        raise AssertionError("a streamed dataset is never listed")


@pytest.fixture
def sharded(monkeypatch):
    monkeypatch.setitem(DATASETS, "flickr8k-sharded", ShardedFlickr8k)
    return ShardedFlickr8k


def _rows(root, m="T"):
    columns, feats = open_cache(cache_dir(root, "flickr8k", m, "train")).read()
    order = np.argsort(columns["id"])
    return {c: v[order].tolist() for c, v in columns.items()}, feats["features"][order]


def test_streamed_shards_give_the_listing_cache_and_resume_per_shard(tmp_path, sharded, monkeypatch):
    root = tmp_path / "flickr8k"
    synth("flickr8k", root, images=6, seed=5)
    extract("flickr8k", root, modalities=["T"], splits=["train"], cache_root=tmp_path / "listed", **TEXT)
    want_cols, want = _rows(tmp_path / "listed")

    chunks: list[int] = []
    import pcmpipe.extract.runner as runner

    real = runner._batches
    monkeypatch.setattr(runner, "_batches", lambda b, recs, *a: chunks.append(len(recs)) or real(b, recs, *a))
    monkeypatch.setattr(sharded, "fail_at", 3)
    out = tmp_path / "streamed"
    with pytest.raises(KeyboardInterrupt):
        extract("flickr8k-sharded", root, modalities=["T"], splits=["train"], cache_root=out, rows_per_shard=4, **TEXT)
    assert chunks == [4, 4, 4] and max(chunks) <= 4  # one shard's records at a time, never the listing
    written = {p.name: p.read_bytes() for p in cache_dir(out, "flickr8k", "T", "train").glob("part-*")}
    assert len(written) == 3  # the three shards before the interruption were finished

    chunks.clear()
    monkeypatch.setattr(sharded, "fail_at", None)
    summary = extract("flickr8k-sharded", root, modalities=["T"], splits=["train"], cache_root=out, rows_per_shard=4,
                      **TEXT)  # fmt: skip
    assert summary.parts[0].status == "resumed" and summary.parts[0].new_rows == 8 and chunks == [4, 4]
    kept = {p.name: p.read_bytes() for p in cache_dir(out, "flickr8k", "T", "train").glob("part-*")}
    assert {n: kept[n] for n in written} == written  # finished shards kept byte for byte
    got_cols, got = _rows(out)
    assert got_cols == want_cols
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert (
        open_cache(cache_dir(out, "flickr8k", "T", "train")).fingerprint
        == open_cache(cache_dir(tmp_path / "listed", "flickr8k", "T", "train")).fingerprint
    )

    with pytest.raises(UserError, match="--limit needs a listing"):
        extract(
            "flickr8k-sharded", root, modalities=["T"], splits=["train"], cache_root=tmp_path / "x", limit=3, **TEXT
        )
