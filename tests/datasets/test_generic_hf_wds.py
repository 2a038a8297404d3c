"""Your own data as a Hugging Face dataset (save_to_disk, imagefolder) and as webdataset tar shards: the same
samples give the same ids, links and features as the table form, bad members are skipped and listed."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
from extraction import extract
from user_data import caption_rows, write_csv

from pcmpipe.cache import cache_dir, open_cache
from pcmpipe.datasets import open_dataset
from pcmpipe.errors import UserError

TINY = {"image": "clip-tiny-image", "text": "clip-tiny-text", "audio": "hubert-tiny"}
RANDOM = {"image": "random:0", "text": "random:0", "audio": "random:0"}
MODALITIES = """modalities:
  I: {kind: image, column: IMG, id: image_id}
  T: {kind: text, column: TXT, id: caption_id}
  S: {kind: audio, column: WAV, id: caption_id}
"""


def _features(cache: Path, dataset: str, m: str, split: str) -> dict[str, np.ndarray]:
    cols, feats = open_cache(cache_dir(cache, dataset, m, split)).read()
    return dict(zip(cols["id"], feats["features"]))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, list[dict], Path]:
    """The samples as a CSV table, extracted: what every other form must reproduce."""
    root = tmp_path_factory.mktemp("table")
    rows = caption_rows(root, n_images=5)
    write_csv(root / "t.csv", rows)
    spec = MODALITIES.replace("IMG", "file").replace("TXT", "caption").replace("WAV", "wav")
    (root / "dataset.yaml").write_text("files: t.csv\nsplit_column: split\n" + spec)
    cache = root / "cache"
    extract("ref", root, backbones=TINY, weights=RANDOM, cache_root=cache, workers=0, device="cpu")
    return root, rows, cache


def test_hf_save_to_disk_with_image_and_audio_bytes(reference, tmp_path, one_thread):
    import datasets

    root, rows, ref_cache = reference
    by_split: dict[str, dict[str, list]] = {}
    for r in rows:
        split = {"val": "validation"}.get(r["split"], r["split"])  # the Hub's name for it
        d = by_split.setdefault(split, {"image": [], "audio": [], "text": [], "image_id": [], "caption_id": []})
        d["image"].append({"bytes": (root / r["file"]).read_bytes(), "path": None})
        d["audio"].append({"bytes": (root / r["wav"]).read_bytes(), "path": None})
        d["text"].append(r["caption"])
        d["image_id"].append(r["image_id"])
        d["caption_id"].append(r["caption_id"])
    features = datasets.Features(
        {
            "image": datasets.Image(),
            # written as the Audio feature's storage struct: encoding through Audio itself needs torchcodec
            "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
            "text": datasets.Value("string"),
            "image_id": datasets.Value("string"),
            "caption_id": datasets.Value("string"),
        }
    )
    dd = datasets.DatasetDict(
        {
            s: datasets.Dataset.from_dict(d, features=features).cast_column("audio", datasets.Audio(decode=False))
            for s, d in by_split.items()
        }
    )
    dd.save_to_disk(str(tmp_path / "hfdata"))
    spec = MODALITIES.replace("IMG", "image").replace("TXT", "text").replace("WAV", "audio")
    (tmp_path / "dataset.yaml").write_text("format: hf\npath: hfdata\n" + spec)
    ds = open_dataset("hfmine", tmp_path)
    assert ds.records("T", "val")[0].links == {"caption_id": "im3#0", "image_id": "im3"}
    cache = tmp_path / "cache"
    extract("hfmine", tmp_path, backbones=TINY, weights=RANDOM, cache_root=cache, workers=1, device="cpu")
    for m in "ITS":
        for split in ("train", "val", "test"):
            want, got = _features(ref_cache, "ref", m, split), _features(cache, "hfmine", m, split)
            assert sorted(got) == sorted(want)
            for k in want:
                np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5)


def test_hf_imagefolder_builder(reference, tmp_path, one_thread):
    root, rows, ref_cache = reference
    for r in rows:
        if r["caption_id"].endswith("#0"):
            target = tmp_path / "folder" / r["split"] / f"{r['image_id']}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((root / r["file"]).read_bytes())
    for split in ("train", "val", "test"):
        meta = [
            {"file_name": f"{r['image_id']}.jpg", "image_id": r["image_id"]}
            for r in rows
            if r["split"] == split and r["caption_id"].endswith("#0")
        ]
        (tmp_path / "folder" / split / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    (tmp_path / "dataset.yaml").write_text(
        "format: hf\nbuilder: imagefolder\npath: folder\nmodalities:\n  I: {kind: image, column: image, id: image_id}\n"
    )
    cache = tmp_path / "cache"
    extract("folder", tmp_path, backbones=TINY, weights=RANDOM, cache_root=cache, workers=0, device="cpu")
    want, got = _features(ref_cache, "ref", "I", "train"), _features(cache, "folder", "I", "train")
    assert sorted(got) == sorted(want)
    np.testing.assert_allclose(got["im1"], want["im1"], rtol=1e-5, atol=1e-5)


def _write_shards(root: Path, rows: list[dict], out: Path, corrupt: str | None = None) -> None:
    import webdataset as wds

    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        with wds.TarWriter(str(out / f"{split}-000.tar")) as sink:
            for r in (r for r in rows if r["split"] == split):
                key = r["caption_id"].replace("#", "_")
                jpg = b"\xff\xd8 broken" if r["image_id"] == corrupt else (root / r["file"]).read_bytes()
                sink.write(
                    {
                        "__key__": key,
                        "jpg": jpg,
                        "wav": (root / r["wav"]).read_bytes(),
                        "txt": r["caption"],
                        "json": {"image_id": r["image_id"], "caption_id": r["caption_id"]},
                    }
                )


def test_webdataset_shards_match_the_table_and_list_a_broken_member(reference, tmp_path, one_thread):
    root, rows, ref_cache = reference
    _write_shards(root, rows, tmp_path / "shards", corrupt="im4")
    spec = MODALITIES.replace("IMG", "jpg").replace("TXT", "txt").replace("WAV", "wav")
    files = "files: {train: 'shards/train-*.tar', val: shards/val-000.tar, test: 'shards/test-*.tar'}\n"
    (tmp_path / "dataset.yaml").write_text(files + spec)
    ds = open_dataset("shards", tmp_path)
    rec = ds.records("I", "train")[0]
    assert rec.path is None and rec.blob is not None and "train-000.tar" in rec.blob.describe()
    cache = tmp_path / "cache"
    summary = extract("shards", tmp_path, backbones=TINY, weights=RANDOM, cache_root=cache, workers=1, device="cpu")
    assert [(e["id"], e["reason"].split(" (")[0]) for e in summary.errors] == [("im4", "unreadable image")]
    for m in "ITS":
        want, got = _features(ref_cache, "ref", m, "train"), _features(cache, "shards", m, "train")
        assert sorted(got) == sorted(want)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5)
    assert _features(cache, "shards", "I", "test") == {}  # its one image, im4, is listed, not cached
    assert sorted(_features(cache, "shards", "T", "test")) == ["im4#0", "im4#1"]


def test_compressed_shards_are_refused_with_the_fix(tmp_path):
    import gzip

    (tmp_path / "a.tar.gz").write_bytes(gzip.compress(io.BytesIO(b"x" * 1024).read()))
    (tmp_path / "dataset.yaml").write_text("files: {train: a.tar.gz}\nmodalities: {I: image:jpg}\n")
    with pytest.raises(UserError, match="decompress"):
        open_dataset("gz", tmp_path).records("I", "train")
