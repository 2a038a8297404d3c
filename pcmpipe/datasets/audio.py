"""Reading speech files the way HuBERT wants them: float32, 16 kHz, mono."""

from __future__ import annotations

import struct
from math import gcd
from pathlib import Path
from typing import BinaryIO

import numpy as np

from pcmpipe.datasets.media import check_audio_header
from pcmpipe.errors import UserError

TARGET_RATE = 16_000


def wav_declared_frames(source: Path | str | BinaryIO) -> int | None:
    """The frame count a RIFF/WAVE header declares (data chunk size / block align); None when the file is no
    plain WAV or leaves its length open (streamed writers put 0 or 0xFFFFFFFF there). `source` is a path or
    a seekable file object (a tar member's or a dataset cell's bytes), read again from its start."""
    if hasattr(source, "read"):
        source.seek(0)  # type: ignore[union-attr]
        return _declared_frames(source)  # type: ignore[arg-type]
    with open(source, "rb") as f:
        return _declared_frames(f)


def _declared_frames(f: BinaryIO) -> int | None:
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    block_align = 0
    while len(chunk := f.read(8)) == 8:
        cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"fmt ":
            fmt = f.read(size)
            block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else 0
            f.seek(size & 1, 1)
        elif cid == b"data":
            if not block_align or size in (0, 0xFFFFFFFF):
                return None
            return size // block_align
        else:
            f.seek(size + (size & 1), 1)  # chunks are padded to an even size
    return None


def load_audio(path: Path | str | BinaryIO, rate: int = TARGET_RATE, where: object = None) -> np.ndarray:
    """Decode a sound file to a float32 waveform [num_samples] at `rate` Hz, mono.

    Stereo (or more channels) is averaged; other sample rates are resampled with a polyphase
    filter (scipy.signal.resample_poly), which is exact for rational ratios such as 22050 -> 16000.
    The header's sample rate, channels and length are checked before decoding (`MediaTooLarge`, see
    pcmpipe.datasets.media). A WAV that holds fewer frames than its header declares (cut off in a copy or a download)
    is a UserError. `where` names the file in messages (default: `path`).
    """
    import soundfile as sf
    from scipy.signal import resample_poly

    where = path if where is None else where
    source = path if hasattr(path, "read") else str(path)  # a file object: a tar member's or a dataset cell's bytes
    try:
        with sf.SoundFile(source) as f:
            check_audio_header(f.frames, f.samplerate, f.channels, where)
            # soundfile never reads past the header's frame count (checked above), whatever the data holds
            data = f.read(frames=f.frames, dtype="float32", always_2d=True)
            sr = f.samplerate
    except (RuntimeError, sf.LibsndfileError) as e:  # unreadable or missing file
        raise UserError(f"cannot read audio file {where}: {e}") from None
    declared = wav_declared_frames(path)
    if declared is not None and len(data) < declared:
        # libsndfile clamps a cut-off WAV's frame count to the bytes present and decodes the rest silently
        raise UserError(
            f"truncated audio file {where}: its header declares {declared} frames, the file holds {len(data)}"
        )
    wav = data.mean(axis=1)
    if sr != rate:
        g = gcd(int(sr), int(rate))
        wav = resample_poly(wav, rate // g, int(sr) // g)
    return np.ascontiguousarray(wav, dtype=np.float32)
