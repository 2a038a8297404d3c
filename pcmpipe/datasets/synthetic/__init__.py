"""`pcmpipe synth`: small synthetic datasets in exactly the real on-disk layouts.

They let the whole pipeline (readers, extraction, training, report) run offline in minutes, and every
reader test runs on them. Content ties the modalities together (captions describe the drawn images,
speech says the captions, attributes and captions follow each CUB class), so trained heads learn
something measurable. Same seed and flags -> byte-identical text files and images.
"""

from __future__ import annotations

from pathlib import Path

from pcmpipe import atomic
from pcmpipe.datasets.synthetic.cub import synth_cub
from pcmpipe.datasets.synthetic.flickr8k import synth_flickr8k
from pcmpipe.errors import UserError

DEFAULT_IMAGES = {"flickr8k": 60, "cub": 3}  # flickr8k: images in all; cub: images per class
# Left in the dataset root, last: says the files are synthetic (the report prints SYNTHETIC for runs on them)
# and that they were written completely.
SYNTHETIC_MARKER = "pcmpipe-synthetic.json"


def synth(
    name: str,
    out: Path | str,
    images: int | None = None,
    seed: int = 0,
    text_subdir: bool = False,
    speech: str = "tones",
) -> dict:
    """Write synthetic `name` ('flickr8k' or 'cub') under `out`; returns a summary dict.

    `images`: Flickr8k total images (split 4:1:1), CUB images per class (200 classes).
    `text_subdir`: Flickr8k text files under Flickr8k_text/; CUB captions under cub_text/text_c10.
    `speech` (Flickr8k): 'tones' (deterministic, default), 'espeak' or 'auto' (espeak-ng when installed).
    """
    if name not in DEFAULT_IMAGES:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DEFAULT_IMAGES)}")
    n = DEFAULT_IMAGES[name] if images is None else images
    if n < 1:
        raise UserError(f"--images must be at least 1, got {n}")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"--out {out} is not empty; choose a new directory so synthetic files never mix with others")
    out.mkdir(parents=True, exist_ok=True)
    if name == "flickr8k":
        summary = synth_flickr8k(out, images=n, seed=seed, text_subdir=text_subdir, speech=speech)
    else:
        summary = synth_cub(out, images_per_class=n, seed=seed, text_subdir=text_subdir)
    request = {"dataset": name, "images": n, "seed": seed, "text_subdir": text_subdir}
    atomic.write_json(out / SYNTHETIC_MARKER, {"synthetic": True, "request": request})  # no paths: byte-identical
    return summary
