"""Crafted media files that ask for gigabytes are refused from their headers, under a real memory limit.

The loaders `extract` and `embed` share (`pcmpipe.extract.sources`, `pcmpipe.datasets.audio.load_audio`) read
a tiny PNG of 1 x 400,000 pixels, a WAV at 1 Hz and ten minutes of FLAC silence next to good files, in a
subprocess whose address space is capped at 1.5 GiB above what its imports map (tests/crafted_media.py).
Before the bounds the resize of the PNG ended in MemoryError there (and in gigabytes of RSS without a cap).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from crafted_media import CRAFTED, silent_flac, slow_wav, wide_png

from pcmpipe.datasets import load_audio
from pcmpipe.datasets.media import MAX_ASPECT, MAX_SECONDS, MediaTooLarge, check_image_size

CHILD = Path(__file__).parents[1] / "crafted_media.py"


@pytest.fixture(scope="module")
def under_limit(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("crafted")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    proc = subprocess.run([sys.executable, str(CHILD), str(root)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.slow  # its fixture extracts crafted media in a memory-capped process
@pytest.mark.parametrize("kind", ["image", "audio"])
def test_crafted_files_are_skipped_and_listed_under_a_memory_limit(under_limit, kind):
    got = under_limit[kind]
    words = {"image": "aspect ratio of 400,000:1", "audio": "sample rate of 1 Hz"}
    assert sorted(got["extract"]) == sorted(CRAFTED[kind])  # each crafted file listed; the good one encoded
    assert got["rows"] == 1
    assert all(reason.startswith(f"{kind} too large (") for reason in got["extract"].values())
    assert words[kind] in " ".join(got["extract"].values())
    assert got["embed"]["kept"] == ["good"] and sorted(got["embed"]["skipped"]) == sorted(CRAFTED[kind])


@pytest.mark.parametrize("kind", ["image", "audio"])
def test_strict_stops_at_a_crafted_file_in_one_line(under_limit, kind):
    message = under_limit[kind]["strict"]
    assert message is not None and "\n" not in message and f"{kind} too large" in message and "--strict" in message


def test_image_bounds_take_elongated_photos_and_refuse_what_the_resize_blows_up():
    check_image_size(6000, 4000, "photo.jpg")
    check_image_size(224 * MAX_ASPECT, 224, "panorama.jpg")
    for w, h, says in [(400_000, 1, "400,000:1"), (1, 2_000_000, "2,000,000:1"), (12_000, 12_000, "more than")]:
        with pytest.raises(MediaTooLarge, match=says):
            check_image_size(w, h, "x.png")


def test_audio_bounds_from_the_header(tmp_path):
    ok = tmp_path / "ok.wav"
    sf.write(str(ok), np.zeros(8000 * 3, np.float32), 8000)
    assert load_audio(ok).shape == (16_000 * 3,)
    with pytest.raises(MediaTooLarge, match="sample rate of 1 Hz"):
        load_audio(slow_wav(tmp_path / "slow.wav", 300, 1))
    with pytest.raises(MediaTooLarge, match=f"lasts 81.0 s, longer than the {MAX_SECONDS} s"):
        load_audio(silent_flac(tmp_path / "long.flac", 81))
    assert load_audio(silent_flac(tmp_path / "edge.flac", MAX_SECONDS)).shape == (16_000 * MAX_SECONDS,)


def test_the_crafted_png_is_tiny(tmp_path):
    """What the bounds are for: a valid PNG under 1 KB whose header asks for a 224 x 89.6M resize."""
    from PIL import Image

    path = wide_png(tmp_path / "wide.png", 400_000)
    assert path.stat().st_size < 1024
    with Image.open(path) as im:
        im.load()
        assert im.size == (400_000, 1)


def test_fine_tuning_refuses_an_elongated_image_in_one_line(tmp_path):
    """Fine-tuning decodes images itself (augmented, every epoch): the same bound, as one line naming the file."""
    import torch

    from pcmpipe.backbones import create_backbone
    from pcmpipe.datasets import Record
    from pcmpipe.training.finetune.data import LiveInputs

    path = wide_png(tmp_path / "strip.png", 150)  # 150:1, past MAX_ASPECT; resized only 224 x 33,600
    preprocess = create_backbone("clip-tiny-image", weights="random:0", device="cpu").preprocess
    records = {"I": [Record("strip", {"image_id": "strip"}, path=path)]}
    inputs = LiveInputs(records, {"I": "image"}, {"I": torch.tensor([0])}, preprocess, False, None, 0, 1)
    with pytest.raises(MediaTooLarge, match=rf"strip.png is 150 x 1 pixels, an aspect ratio of 150:1 .*{MAX_ASPECT}:1"):
        inputs[0]
