"""Synthetic datasets: deterministic per seed, in the real layouts, with modalities that agree."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pcmpipe.datasets import open_dataset
from pcmpipe.datasets.synthetic import SYNTHETIC_MARKER, synth
from pcmpipe.datasets.synthetic.flickr8k import split_sizes
from pcmpipe.datasets.synthetic.render import COLOURS, tone_speech
from pcmpipe.errors import UserError


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_flickr8k_deterministic_per_seed(tmp_path):
    synth("flickr8k", tmp_path / "a", images=12, seed=7)
    synth("flickr8k", tmp_path / "b", images=12, seed=7)
    synth("flickr8k", tmp_path / "c", images=12, seed=8)
    a, b, c = (tree_digest(tmp_path / x) for x in "abc")
    assert a == b
    assert len(a) == 12 + 4 + 60 + 2 + 1  # images, token + 3 split lists, wavs, wav2capt + wav2spk, the marker
    marker = json.loads((tmp_path / "a" / SYNTHETIC_MARKER).read_text())
    assert marker == {
        "synthetic": True,
        "request": {"dataset": "flickr8k", "images": 12, "seed": 7, "text_subdir": False},
    }
    assert a["Flickr8k.token.txt"] != c["Flickr8k.token.txt"]


def test_cub_deterministic_per_seed(tmp_path):
    synth("cub", tmp_path / "a", images=1, seed=2)
    synth("cub", tmp_path / "b", images=1, seed=2)
    a, b = tree_digest(tmp_path / "a"), tree_digest(tmp_path / "b")
    assert a == b
    assert "attributes.txt" in a and "CUB_200_2011/attributes/class_attribute_labels_continuous.txt" in a
    assert SYNTHETIC_MARKER in a and "seen_test_images.txt" in a
    assert sum(k.startswith("CUB_200_2011/images/") for k in a) == 200
    assert sum(k.startswith("text_c10/") for k in a) == 200


def test_split_sizes():
    assert split_sizes(60) == (40, 10, 10)
    assert split_sizes(600) == (400, 100, 100)
    assert sum(split_sizes(13)) == 13


def _has_colour(img: Image.Image, rgb: tuple[int, int, int]) -> bool:
    px = np.asarray(img.convert("RGB"), dtype=int).reshape(-1, 3)
    return bool((np.abs(px - rgb).sum(axis=1) < 40).sum() > 30)


def test_flickr8k_captions_describe_the_images(tmp_path):
    synth("flickr8k", tmp_path, images=12, seed=1)
    ds = open_dataset("flickr8k", tmp_path)
    captions = {r.id: r.text for r in ds.records("T", "train")}
    for rec in ds.records("I", "train"):
        first = captions[f"{rec.id}#0"].split()  # "a red circle above a blue square"
        colours = [w for w in first if w in COLOURS]
        assert len(colours) == 2
        img = Image.open(rec.path)
        assert img.size == (160, 120)
        assert all(_has_colour(img, COLOURS[c]) for c in colours), (rec.id, first)


def test_cub_classes_are_consistent(tmp_path):
    synth("cub", tmp_path, images=4, seed=0)
    ds = open_dataset("cub", tmp_path)
    recs = ds.records("A", "test")
    vecs = np.stack([r.vector for r in recs])
    cls = np.array([r.links["class_id"] for r in recs])
    sim = vecs @ vecs.T / np.outer(np.linalg.norm(vecs, axis=1), np.linalg.norm(vecs, axis=1))
    same = (cls[:, None] == cls[None, :]) & ~np.eye(len(cls), dtype=bool)
    assert sim[same].mean() > sim[cls[:, None] != cls[None, :]].mean() + 0.3
    # captions of one class name the same crown colour every time it is mentioned
    texts = [r.text for r in ds.records("T", "test") if r.links["class_id"] == recs[0].links["class_id"]]
    crowns = {t.split(" crown.")[0].split()[-1] for t in texts if t.endswith(" crown.")}
    assert len(crowns) == 1


def test_tone_speech_is_deterministic_and_word_dependent():
    a = tone_speech("a red circle", 16000)
    assert np.array_equal(a, tone_speech("a red circle", 16000))
    assert not np.array_equal(a[: len(tone_speech("a blue", 16000))], tone_speech("a blue", 16000))
    assert a.dtype == np.float32 and np.abs(a).max() <= 1.0


def test_user_errors(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        synth("flickr8k", tmp_path / "full")
    with pytest.raises(UserError, match="unknown dataset"):
        synth("coco", tmp_path / "new")
    with pytest.raises(UserError, match="--images"):
        synth("cub", tmp_path / "new", images=0)
    with pytest.raises(UserError, match="--speech"):
        synth("flickr8k", tmp_path / "new", speech="opera")
    if shutil.which("espeak-ng") is None:
        with pytest.raises(UserError, match="espeak-ng"):
            synth("flickr8k", tmp_path / "new2", speech="espeak")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_espeak_speech(tmp_path):
    synth("flickr8k", tmp_path, images=3, speech="espeak")
    assert len(list((tmp_path / "flickr_audio" / "wavs").glob("*.wav"))) == 15


def test_cli_synth(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "f"
    cmd = [
        sys.executable,
        "-m",
        "pcmpipe",
        "synth",
        "flickr8k",
        "--out",
        str(out),
        "--images",
        "6",
        "--text-subdir",
        "--seed",
        "2",
    ]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert (out / "Flickr8k_text" / "Flickr_8k.devImages.txt").read_text().count(".jpg") == 1
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "not empty" in again.stderr and "Traceback" not in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
