"""Synthetic Flickr8k + Flickr Audio in the official layout (see flickr8k.py), quirks included.

Each image is drawn from a latent scene: two shapes (shape, colour, size) side by side or one above the
other, on a background. Its five captions describe that scene in five phrasings, and the spoken
captions say the same words. The token file also carries the real bogus key
`2258277193_586949ec62.jpg.1` (five captions, no image, in no split list).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pcmpipe.datasets.flickr8k import AUDIO_DIR, IMAGE_DIR, SPLIT_FILES, TEXT_SUBDIR, TOKEN_FILE
from pcmpipe.datasets.synthetic.render import a, draw_shape, resolve_speech, write_speech

BOGUS_KEY = "2258277193_586949ec62.jpg.1"
SHAPES = ("circle", "square", "triangle", "diamond")
SHAPE_COLOURS = ("red", "green", "blue", "yellow", "black", "orange", "purple", "pink")
BACKGROUNDS = {"white": (250, 250, 250), "grey": (150, 150, 150), "sky": (170, 210, 240)}
WIDTH, HEIGHT = 160, 120
NUM_SPEAKERS = 6


def split_sizes(n: int) -> tuple[int, int, int]:
    """train / val / test image counts in the real 6:1:1 ratio (60 -> 40/10/10)."""
    val = test = max(1, round(n / 6)) if n >= 3 else 0
    return n - val - test, val, test


def _scene(rng: np.random.Generator) -> dict:
    a, b = rng.choice(len(SHAPES), 2, replace=True), rng.choice(len(SHAPE_COLOURS), 2, replace=False)
    return {
        "objects": [(SHAPES[a[k]], SHAPE_COLOURS[b[k]], ["small", "large"][int(rng.integers(2))]) for k in range(2)],
        "vertical": bool(rng.integers(2)),
        "background": list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))],
        "jitter": rng.integers(-8, 9, size=4).tolist(),
    }


def _render(scene: dict) -> Image.Image:
    img = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUNDS[scene["background"]])
    d = ImageDraw.Draw(img)
    jx0, jy0, jx1, jy1 = scene["jitter"]
    centres = [(50 + jx0, 60 + jy0), (110 + jx1, 60 + jy1)]
    if scene["vertical"]:
        centres = [(80 + jx0, 32 + jy0), (80 + jx1, 88 + jy1)]
    for (shape, colour, size), (cx, cy) in zip(scene["objects"], centres):
        r = 24 if size == "large" else 14
        draw_shape(d, shape, (cx - r, cy - r, cx + r, cy + r), colour)
    return img


def _captions(scene: dict) -> list[str]:
    (s1, c1, z1), (s2, c2, z2) = scene["objects"]
    rel, inv = ("above", "below") if scene["vertical"] else ("on the left of", "on the right of")
    bg = scene["background"]
    return [
        f"{a(f'{c1} {s1}')} {rel} {a(f'{c2} {s2}')}",
        f"{a(f'{c2} {s2}')} {inv} {a(f'{c1} {s1}')}",
        f"{a(f'{z1} {c1} {s1}')} and {a(f'{z2} {c2} {s2}')} on {a(bg)} background",
        f"two shapes : {a(f'{c1} {s1}')} and {a(f'{c2} {s2}')}",
        f"a picture of {a(f'{c2} {s2}')} next to {a(f'{z1} {c1} {s1}')} .",
    ]


def _image_id(rng: np.random.Generator) -> str:
    """An id shaped like Flickr's: 10 digits, underscore, 10 hex digits."""
    return f"{int(rng.integers(10**9, 4 * 10**9))}_{rng.bytes(5).hex()}"


def synth_flickr8k(
    out: Path, images: int = 60, seed: int = 0, text_subdir: bool = False, speech: str = "tones"
) -> dict:
    """Write a synthetic Flickr8k under `out`; returns a summary (counts per split, speech mode)."""
    mode = resolve_speech(speech)
    rng = np.random.default_rng(seed)
    ids: list[str] = []
    while len(ids) < images:
        i = _image_id(rng)
        if i not in ids:
            ids.append(i)
    scenes = {i: _scene(rng) for i in ids}
    n_train, n_val, n_test = split_sizes(images)
    split_ids = {"train": ids[:n_train], "val": ids[n_train : n_train + n_val], "test": ids[n_train + n_val :]}

    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    for i in ids:
        _render(scenes[i]).save(out / IMAGE_DIR / f"{i}.jpg", quality=90)

    text_dir = out / TEXT_SUBDIR if text_subdir else out
    text_dir.mkdir(parents=True, exist_ok=True)
    for split, fname in SPLIT_FILES.items():
        (text_dir / fname).write_text("".join(f"{i}.jpg\n" for i in split_ids[split]), encoding="utf-8")
    # the real token file is not sorted; the bogus key sits among the others
    order = [ids[k] for k in rng.permutation(len(ids))]
    order.insert(len(order) // 2, BOGUS_KEY)
    lines = []
    for i in order:
        caps = _captions(scenes[i]) if i != BOGUS_KEY else _captions(_scene(rng))
        key = i if i == BOGUS_KEY else f"{i}.jpg"
        lines += [f"{key}#{n}\t{c}\n" for n, c in enumerate(caps)]
    (text_dir / TOKEN_FILE).write_text("".join(lines), encoding="utf-8")

    wav_dir = out / AUDIO_DIR / "wavs"
    wav_dir.mkdir(parents=True, exist_ok=True)
    capt, spk = [], []
    for i in order:
        if i == BOGUS_KEY:
            continue
        for n, caption in enumerate(_captions(scenes[i])):
            wav = f"{i}_{n}.wav"
            speaker = int(rng.integers(NUM_SPEAKERS))
            write_speech(wav_dir / wav, caption, mode, speaker)
            capt.append(f"{wav} {i}.jpg #{n}\n")
            spk.append(f"{wav} {speaker + 1}\n")
    (out / AUDIO_DIR / "wav2capt.txt").write_text("".join(capt), encoding="utf-8")
    (out / AUDIO_DIR / "wav2spk.txt").write_text("".join(spk), encoding="utf-8")
    return {"dataset": "flickr8k", "images": {s: len(v) for s, v in split_ids.items()}, "speech": mode}
