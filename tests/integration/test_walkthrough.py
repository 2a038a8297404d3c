"""The walk-through of docs/using.md, as a new user runs it: a folder of images and captions -> features -> a
trained run -> search from text in the terminal and from Python, with the same answers.

Every step is the documented command in a real subprocess. The data is the synthetic Flickr8k layout
(`pcmpipe synth`); the backbones are the tiny random-weight CLIP towers, so it runs in CI in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pcmpipe

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")


def _pcmpipe(cwd: Path, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pcmpipe", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"pcmpipe {' '.join(args)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


def test_from_a_folder_of_images_and_captions_to_search(tmp_path, monkeypatch):
    _pcmpipe(tmp_path, "synth", "flickr8k", "--out", "data/flickr8k", "--images", "12")
    _pcmpipe(
        tmp_path, "extract", "--dataset", "flickr8k", "--root", "data/flickr8k", "--modalities", "I,T",
        "--image-backbone", "clip-tiny-image", "--text-backbone", "clip-tiny-text",
        "--weights-image", "random:0", "--weights-text", "random:0", "--device", "cpu", "--workers", "0",
    )  # fmt: skip
    _pcmpipe(
        tmp_path, "train", "--dataset", "flickr8k", "--modalities", "I,T", "--epochs", "2", "--batch-size", "8",
        "--name", "mine", "--device", "cpu",
    )  # fmt: skip
    run_dir = tmp_path / "cache" / "runs" / "mine"
    query = ["--query", "a dog runs on the grass", "--from", "T", "--to", "I", "-k", "3"]
    table = _pcmpipe(tmp_path, "search", str(run_dir), *query)
    hits = json.loads(_pcmpipe(tmp_path, "search", str(run_dir), *query, "--json"))
    images = {p.stem for p in (tmp_path / "data" / "flickr8k" / "Flicker8k_Dataset").glob("*.jpg")}
    assert len(hits) == 2 and {h["id"] for h in hits} <= images  # the test split's two images, ranked
    assert all(h["id"] in table for h in hits)

    monkeypatch.chdir(tmp_path)
    run = pcmpipe.load_run("cache/runs/mine")
    from_python = run.search("a dog runs on the grass", from_="T", to="I", k=3)
    assert [i for i, _ in from_python] == [h["id"] for h in hits]
    assert [s for _, s in from_python] == pytest.approx([h["score"] for h in hits], abs=1e-5)
