"""Small datasets in a user's own forms, built on the fly: images (PIL), wavs (soundfile), caption rows.

`caption_rows(root, n_images)` writes n images and one wav per caption under root/ and returns one row per
caption (two per image): image_id, caption_id, file, wav, caption, attrs (4 numbers as a string), split.
The tables, Hugging Face datasets and tar shards of the tests are made from these rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SPLITS = ("train", "train", "train", "val", "test", "test")
WORDS = ("dog", "cat", "bird", "horse", "boat", "tree", "car", "child")


def write_image(path: Path, seed: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rng.random((40, 52, 3)) * 255).astype("uint8")).save(path)
    return path


def write_wav(path: Path, seed: int, seconds: float = 0.3) -> Path:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (rng.standard_normal(int(16_000 * seconds)) * 0.1).astype("float32"), 16_000)
    return path


def caption_rows(root: Path, n_images: int = 6, *, media: bool = True) -> list[dict[str, str]]:
    rows = []
    rng = np.random.default_rng(0)
    for i in range(n_images):
        if media:
            write_image(root / "img" / f"{i}.jpg", i)
        for j in range(2):
            if media:
                write_wav(root / "wav" / f"{i}_{j}.wav", 10 * i + j, 0.2 + 0.05 * (i % 3))
            rows.append(
                {
                    "image_id": f"im{i}",
                    "caption_id": f"im{i}#{j}",
                    "file": f"img/{i}.jpg",
                    "wav": f"wav/{i}_{j}.wav",
                    "caption": f"a {WORDS[i % len(WORDS)]} next to a {WORDS[(i + j + 1) % len(WORDS)]}",
                    "attrs": " ".join(f"{v:.4f}" for v in rng.random(4)),
                    "split": SPLITS[i % len(SPLITS)],
                }
            )
    return rows


def write_csv(path: Path, rows: list[dict[str, str]], delimiter: str = ",") -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        w.writeheader()
        w.writerows(rows)
    return path
