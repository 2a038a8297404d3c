"""Resume in process: `extract` interrupted by an exception between two batches keeps its finished shards, and the
next run encodes only the rest.

(A SIGKILLed `pcmpipe extract` resumed: tests/integration/test_extract_faults.py; killed under torchrun:
tests/test_distributed.py.)"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in this file may download

import pytest
from extraction import extract

from pcmpipe.cache import cache_dir, open_cache
from pcmpipe.cache.layout import manifests_under
from pcmpipe.datasets.synthetic import synth

TINY = {"image": "clip-tiny-image", "text": "clip-tiny-text", "audio": "hubert-tiny"}
RANDOM = {"image": "random:0", "text": "random:0", "audio": "random:0"}


def _finished_shards(cache_root: Path) -> dict[Path, tuple[int, str]]:
    """Every shard file listed in a manifest -> (mtime_ns, sha256 of its bytes)."""
    out = {}
    for manifest in manifests_under(cache_root):
        for shard in json.loads(manifest.read_text())["shards"]:
            path = manifest.parent / shard["file"]
            out[path] = (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def test_resume_in_process_skips_done_ids(tmp_path, monkeypatch):
    """A writer interrupted by an exception keeps its finished shards; the next run encodes only the rest."""
    root = tmp_path / "flickr8k"
    synth("flickr8k", root, images=6, seed=4)
    import pcmpipe.extract.sources as sources

    calls = {"n": 0}
    real = sources.encode

    def failing(backbone, batch):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # what Ctrl-C does between two batches
        return real(backbone, batch)

    kw = dict(
        modalities=["T"],
        splits=["train"],
        backbones=TINY,
        weights=RANDOM,
        cache_root=tmp_path / "c",
        rows_per_shard=4,
        batch_size=2,
    )
    monkeypatch.setattr(sources, "encode", failing)
    with pytest.raises(KeyboardInterrupt):
        extract("flickr8k", root, **kw)
    monkeypatch.setattr(sources, "encode", real)
    directory = cache_dir(tmp_path / "c", "flickr8k", "T", "train")
    kept = _finished_shards(tmp_path / "c")
    assert sum(1 for _ in kept) >= 1
    summary = extract("flickr8k", root, **kw)
    part = summary.parts[0]
    assert part.status == "resumed" and part.rows == 20 and part.new_rows == 20 - 6  # 3 batches of 2 were kept
    assert {p: v for p, v in _finished_shards(tmp_path / "c").items() if p in kept} == kept
    assert len(set(open_cache(directory).read()[0]["id"].tolist())) == 20
