"""Reading speech files the way HuBERT wants them: float32, 16 kHz, mono."""

from __future__ import annotations

from math import gcd
from pathlib import Path
from typing import BinaryIO

import numpy as np

from pcmpipe.errors import UserError

TARGET_RATE = 16_000


def load_audio(path: Path | str | BinaryIO, rate: int = TARGET_RATE) -> np.ndarray:
    """Decode a sound file to a float32 waveform [num_samples] at `rate` Hz, mono.

    Stereo (or more channels) is averaged; other sample rates are resampled with a polyphase
    filter (scipy.signal.resample_poly), which is exact for rational ratios such as 22050 -> 16000.
    """
    import soundfile as sf
    from scipy.signal import resample_poly

    source = path if hasattr(path, "read") else str(path)  # a file object: a tar member's or a dataset cell's bytes
    try:
        data, sr = sf.read(source, dtype="float32", always_2d=True)  # [num_samples, channels]
    except (RuntimeError, sf.LibsndfileError) as e:  # unreadable or missing file
        raise UserError(f"cannot read audio file {path}: {e}") from None
    wav = data.mean(axis=1)
    if sr != rate:
        g = gcd(int(sr), int(rate))
        wav = resample_poly(wav, rate // g, int(sr) // g)
    return np.ascontiguousarray(wav, dtype=np.float32)
