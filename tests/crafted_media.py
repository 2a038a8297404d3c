"""Small files that ask a decoder for gigabytes, written on the fly (nothing crafted is checked in).

- `wide_png(path, width)`: a 1-pixel-high greyscale PNG; 1 x 400,000 is under 1 KB. Its pixel count is tiny, but
  resizing its shorter side to an encoder's 224 pixels makes a 224 x 89.6M image.
- `slow_wav(path, frames, rate)`: 16-bit mono PCM at `rate` Hz; 30,000 frames at 1 Hz is 60 KB and 8.3 hours,
  which resampling to 16 kHz turns into 480M samples.
- `silent_flac(path, seconds)`: silence compresses to almost nothing; 10 minutes at 16 kHz is a few KB that
  decode to 9.6M samples and a speech encoder input 7,500 times longer than a caption.

`python tests/crafted_media.py DIR` runs `check_under_memory_limit(DIR)`: the real loaders (extraction over a
dataset.yaml, and `encode_inputs`, which `embed` uses) read these files next to good ones with the address space
limited to what the imports mapped plus `LIMIT_BYTES`, and print what they did as JSON.
"""

from __future__ import annotations

import json
import resource
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

LIMIT_BYTES = 3 << 29  # 1.5 GiB on top of what torch and the tiny models map


def wide_png(path: Path, width: int, height: int = 1) -> Path:
    """A greyscale PNG of width x height zero pixels, written by hand (PIL holds the whole image to save it)."""
    row = b"\x00" + bytes(width)  # filter byte + pixels
    raw = zlib.compress(row * height, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return path


def slow_wav(path: Path, frames: int, rate: int) -> Path:
    """16-bit mono PCM WAV of `frames` frames at `rate` Hz (a quiet tone), header written by hand."""
    pcm = (np.sin(np.arange(frames) / 3.0) * 3000).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def silent_flac(path: Path, seconds: float, rate: int = 16_000) -> Path:
    import soundfile as sf

    sf.write(str(path), np.zeros(int(seconds * rate), np.int16), rate, format="FLAC")
    return path


CRAFTED = {"image": ("wide", "wider", "tall"), "audio": ("slow", "long")}


def _write_inputs(root: Path) -> dict[str, list[Path]]:
    """A good file and the crafted ones of each kind, each kind a dataset of its own (root/<kind>/dataset.yaml,
    one modality read from a CSV) -> {kind: [paths], good first}."""
    sys.path.insert(0, str(Path(__file__).parent))
    from user_data import write_image, write_wav

    image, audio = root / "image", root / "audio"
    paths = {
        "image": [
            write_image(image / "good.png", 1),
            wide_png(image / "wide.png", 400_000),
            wide_png(image / "wider.png", 2_000_000),
            wide_png(image / "tall.png", 1, height=400_000),
        ],
        "audio": [write_wav(audio / "good.wav", 2, seconds=0.5)],
    }
    paths["audio"] += [slow_wav(audio / "slow.wav", 30_000, 1), silent_flac(audio / "long.flac", 600)]
    for kind, files in paths.items():
        rows = ["id,file,split", *(f"{p.stem},{p.name},train" for p in files)]
        (root / kind / "all.csv").write_text("\n".join(rows) + "\n")
        (root / kind / "dataset.yaml").write_text(
            f"files: all.csv\nsplit_column: split\nmodalities:\n  X: {{kind: {kind}, column: file}}\n"
        )
    return paths


def _limit_address_space(extra: int) -> int:
    """RLIMIT_AS = what this process maps now + `extra`: a real ceiling that an allocation of gigabytes hits."""
    size = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmSize")
    )
    resource.setrlimit(resource.RLIMIT_AS, (size + extra, size + extra))
    return size + extra


def check_under_memory_limit(root: Path) -> dict:
    """Extraction (skip and list; --strict) and embed's `encode_inputs` over each kind's files, under the limit."""
    import torch
    from extraction import extract

    from pcmpipe.backbones import create_backbone
    from pcmpipe.errors import UserError
    from pcmpipe.runs.inputs import encode_inputs

    torch.set_num_threads(1)
    paths = _write_inputs(root)
    names = {"image": "clip-tiny-image", "audio": "hubert-tiny"}
    backbones = {k: create_backbone(n, weights="random:0", device="cpu") for k, n in names.items()}
    for kind, backbone in backbones.items():  # import and run everything once, on a good file
        encode_inputs(backbone, paths[kind][:1])
    out: dict = {"limit": _limit_address_space(LIMIT_BYTES)}
    for kind, backbone in backbones.items():
        kw = dict(backbones={kind: names[kind]}, weights={kind: "random:0"}, device="cpu", workers=0)
        summary = extract(kind, root / kind, cache_root=root / "cache", **kw)
        res = {"extract": {e["id"]: e["reason"] for e in summary.errors}, "rows": sum(p.rows for p in summary.parts)}
        try:
            extract(kind, root / kind, cache_root=root / "strict", strict=True, **kw)
            res["strict"] = None
        except UserError as e:
            res["strict"] = str(e)
        got = encode_inputs(backbone, paths[kind])
        res["embed"] = {"kept": got.ids, "skipped": got.skipped}
        out[kind] = res
    return out


if __name__ == "__main__":
    print(json.dumps(check_under_memory_limit(Path(sys.argv[1]))))
