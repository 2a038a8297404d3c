"""What decoding one image or sound file may allocate, checked from its header before a pixel or sample is read.

A few hundred bytes can ask a decoder for gigabytes: a 1 x 400,000 PNG is under 1 KB and has few pixels, but
the encoders' resize makes its shorter side 224 pixels, which makes a 224 x 89,600,000 image (tens of GB);
60 KB of WAV at 1 Hz is 8 hours, which resampling to 16 kHz turns into 480M samples; a few KB of FLAC
silence decode to an hour of audio, and a speech encoder's attention grows with the square of its length.
Such a file is refused from its header with `MediaTooLarge` (a `UserError`): extraction and `embed` skip it
and list the reason, like any unusable input (`--strict`: one line).
"""

from __future__ import annotations

from pcmpipe.errors import UserError

# PIL's own decompression-bomb warning level (Image.MAX_IMAGE_PIXELS): 256 MB as 8-bit RGB
MAX_PIXELS = 89_478_485
# No photograph, scan or panorama is this elongated, and the shortest-side resize of every image encoder
# allocates (input size)^2 x aspect: at 224 pixels a 100:1 image resizes to 224 x 22,400 (15 MB as RGB)
MAX_ASPECT = 100
# Audio: rates outside these are no recording (4 kHz is below telephone speech; 384 kHz is the highest that
# studio converters use). One clip is at most one speech batch (pcmpipe.backbones.speech.MAX_AUDIO_SAMPLES):
# HuBERT's self-attention over 80 s (4,000 frames) already takes about 0.8 GB per layer.
MIN_RATE = 4_000
MAX_RATE = 384_000
MAX_SECONDS = 80
MAX_CHANNELS = 32
# decoded samples over all channels (float32): 80 s of 192 kHz stereo, 128 MB
MAX_DECODED_SAMPLES = 1 << 25


class MediaTooLarge(UserError):
    """An image or sound file whose decoding pcmpipe refuses from its header (the reason names the bound)."""


def check_image_size(width: int, height: int, where: object) -> None:
    """Refuse an image of more than MAX_PIXELS pixels, or more elongated than MAX_ASPECT:1, before decoding."""
    if width < 1 or height < 1:
        raise MediaTooLarge(f"{where} is {width} x {height} pixels: it holds no picture")
    if width * height > MAX_PIXELS:
        raise MediaTooLarge(f"{where} is {width:,} x {height:,} pixels, more than the {MAX_PIXELS:,} pcmpipe decodes")
    aspect = max(width, height) / min(width, height)
    if aspect > MAX_ASPECT:
        raise MediaTooLarge(
            f"{where} is {width:,} x {height:,} pixels, an aspect ratio of {aspect:,.0f}:1 (pcmpipe takes up to "
            f"{MAX_ASPECT}:1): resizing its shorter side to an encoder's 224 pixels would make the longer "
            f"{int(224 * aspect):,}"
        )


def check_audio_header(frames: int, rate: int, channels: int, where: object) -> None:
    """Refuse a sound file from its header: its sample rate, length and decoded size must be within the bounds."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise MediaTooLarge(f"{where} has a sample rate of {rate:,} Hz; pcmpipe reads {MIN_RATE:,} to {MAX_RATE:,} Hz")
    if not 1 <= channels <= MAX_CHANNELS:
        raise MediaTooLarge(f"{where} has {channels} channels; pcmpipe reads 1 to {MAX_CHANNELS}")
    seconds = frames / rate
    if seconds > MAX_SECONDS:
        raise MediaTooLarge(
            f"{where} lasts {seconds:,.1f} s, longer than the {MAX_SECONDS} s one clip may be (the speech "
            "encoder's memory grows with the square of the length); cut it into shorter clips"
        )
    if frames * channels > MAX_DECODED_SAMPLES:
        raise MediaTooLarge(
            f"{where} holds {frames:,} frames of {channels} channels, more than the "
            f"{MAX_DECODED_SAMPLES:,} samples pcmpipe decodes at once"
        )
