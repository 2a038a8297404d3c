"""Drawing and speaking for the synthetic datasets: shapes and birds with PIL, captions as sound.

Speech: with `espeak-ng` on PATH (and `speech="auto"` or `"espeak"`) a caption is spoken by
`espeak-ng -w out.wav` (22.05 kHz mono). Otherwise ("tones") it becomes a deterministic tone sequence:
one 16-bit tone per word, whose two partials come from the sha256 of the word (so the same word always
sounds the same and speech features carry the caption's content), scaled by a per-speaker pitch factor,
with a Hann envelope and 40 ms of silence between words.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pcmpipe.errors import UserError

COLOURS: dict[str, tuple[int, int, int]] = {
    "blue": (40, 80, 200),
    "brown": (120, 75, 40),
    "iridescent": (60, 180, 170),
    "purple": (120, 50, 160),
    "rufous": (170, 70, 30),
    "grey": (128, 128, 128),
    "yellow": (235, 210, 40),
    "olive": (128, 128, 50),
    "green": (50, 150, 60),
    "pink": (240, 150, 180),
    "orange": (240, 140, 30),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "red": (210, 30, 30),
    "buff": (220, 195, 150),
}
SPEECH_MODES = ("auto", "espeak", "tones")


def a(phrase: str) -> str:
    """'orange circle' -> 'an orange circle'."""
    return f"{'an' if phrase[:1].lower() in 'aeiou' else 'a'} {phrase}"


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour: str) -> None:
    """Draw a filled circle / square / triangle / diamond in `box` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "diamond":
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape}")


def draw_bird(
    size: int, colours: dict[str, str], scale: float, dx: float, dy: float, background: tuple[int, int, int]
) -> Image.Image:
    """A side view of a bird: body (primary), belly (underparts), wing, head (crown), bill, legs.

    `scale` in [0.5, 1] sets the body size, (dx, dy) in [-1, 1] shift it; colour keys are the part names.
    """
    img = Image.new("RGB", (size, size), background)
    d = ImageDraw.Draw(img)
    s = size * scale
    cx, cy = size / 2 + dx * size * 0.12, size / 2 + dy * size * 0.12
    bw, bh = 0.55 * s, 0.35 * s
    d.line([(cx - 0.1 * s, cy + bh / 2), (cx - 0.1 * s, cy + bh / 2 + 0.2 * s)], fill=COLOURS[colours["leg"]], width=3)
    d.line([(cx + 0.1 * s, cy + bh / 2), (cx + 0.1 * s, cy + bh / 2 + 0.2 * s)], fill=COLOURS[colours["leg"]], width=3)
    d.ellipse([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], fill=COLOURS[colours["primary"]])
    d.ellipse([cx - bw / 3, cy, cx + bw / 3, cy + bh / 2], fill=COLOURS[colours["underparts"]])
    d.ellipse([cx - bw / 3, cy - bh / 3, cx + bw / 6, cy + bh / 6], fill=COLOURS[colours["wing"]])
    hr = 0.13 * s
    hx, hy = cx + bw / 2, cy - bh / 2
    d.ellipse([hx - hr, hy - hr, hx + hr, hy + hr], fill=COLOURS[colours["crown"]])
    d.polygon(
        [(hx + hr * 0.8, hy - hr * 0.3), (hx + hr * 2.2, hy), (hx + hr * 0.8, hy + hr * 0.3)],
        fill=COLOURS[colours["bill"]],
    )
    return img


def _word_tone(word: str, pitch: float, rate: int) -> np.ndarray:
    """float32 [n] tone of one word: two partials from the word's sha256, length from its letters."""
    h = hashlib.sha256(word.lower().encode()).digest()
    f1 = (180 + 6 * h[0] % 600) * pitch
    f2 = (900 + 8 * h[1]) * pitch
    dur = 0.08 + 0.018 * min(len(word), 10)
    t = np.arange(int(dur * rate)) / rate
    tone = 0.6 * np.sin(2 * np.pi * f1 * t) + 0.3 * np.sin(2 * np.pi * f2 * t)
    return (tone * np.hanning(len(t))).astype(np.float32)


def tone_speech(text: str, rate: int, pitch: float = 1.0) -> np.ndarray:
    """float32 [num_samples] deterministic rendering of `text` (see module docstring)."""
    gap = np.zeros(int(0.04 * rate), dtype=np.float32)
    parts = [gap]
    for word in text.replace(",", " ").replace(".", " ").split():
        parts += [_word_tone(word, pitch, rate), gap]
    return np.concatenate(parts)


def resolve_speech(mode: str) -> str:
    """'auto' -> 'espeak' when espeak-ng is on PATH, else 'tones'; checks explicit choices."""
    if mode not in SPEECH_MODES:
        raise UserError(f"--speech must be one of {', '.join(SPEECH_MODES)}, got {mode!r}")
    has_espeak = shutil.which("espeak-ng") is not None
    if mode == "espeak" and not has_espeak:
        raise UserError("--speech espeak needs espeak-ng on PATH (apt-get install espeak-ng), or use --speech tones")
    if mode == "auto":
        return "espeak" if has_espeak else "tones"
    return mode


def write_speech(path: Path, text: str, mode: str, speaker: int) -> None:
    """Write `text` as a wav file; tones vary rate/channels by speaker to exercise resampling."""
    import soundfile as sf

    if mode == "espeak":
        voice_speed = str(150 + 10 * (speaker % 5))
        subprocess.run(
            ["espeak-ng", "-s", voice_speed, "-w", str(path), text],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return
    rate = 16_000 if speaker % 2 == 0 else 22_050  # odd speakers need resampling to 16 kHz
    wav = tone_speech(text, rate, pitch=0.9 + 0.05 * (speaker % 5))
    if speaker % 3 == 2:  # some speakers in stereo: load_audio must average the channels
        wav = np.stack([wav, 0.5 * wav], axis=1)
    sf.write(str(path), wav, rate, subtype="PCM_16")
