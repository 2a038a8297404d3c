"""JPEG decoding and preprocessing on the encoding device, so a GPU is not fed by CPU decoding alone.

On the CPU a 500 x 375 JPEG takes about 10 ms to decode and resize per core: 16 cores give about 1,600 images/s,
while an H100 runs ViT-B/32 at several thousand. On CUDA, extraction therefore sends the JPEG bytes themselves:
DataLoader workers only read the file and its header; the main process decodes the batch with nvJPEG
(`torchvision.io.decode_jpeg(..., device="cuda")`) and resizes, crops and normalises it as tensors on the GPU
(`TensorPreprocess`, the tower's own open_clip transform restated on tensors).

Per image, the CPU path stays the fallback: a file that is not a baseline RGB JPEG (CMYK, grayscale,
progressive, PNG, ...) is decoded and preprocessed in its worker exactly as on CPU, and an image the device
decoder refuses (a broken JPEG) is retried through the CPU path in the main process, which then either encodes
it or skips it with the CPU path's reason. `Encoded.fallback` counts them per batch; the extraction summary
per split (`PartSummary.decode_fallback`).

On CPU the default stays the PIL path (`sources.image_batches`). The two paths agree within `TOLERANCE`
(tests/extract/test_decode.py runs this module's path on the CPU, where decode_jpeg uses libjpeg-turbo as PIL
does): the tensor resize (antialiased bicubic on uint8, as PIL's) differs from PIL's by a grey level in a few
pixels.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from pcmpipe.augment.views import ViewSpec
from pcmpipe.backbones import Backbone
from pcmpipe.backbones.batching import fixed_batches
from pcmpipe.datasets import Record
from pcmpipe.datasets.media import check_image_size
from pcmpipe.extract import sources

# Largest difference between this path's preprocessed input and the PIL path's after normalisation, and the mean
# over all values. On the CPU decode_jpeg and PIL decode to the same pixels and the resize differs by one grey level
# in a few pixels (1 / 255 / CLIP's smallest std 0.258 = 0.015; mean 6e-5 on 500 x 375 photos). nvJPEG's IDCT may
# add a level or two on a GPU: not yet measured there (docs/extraction.md, "Decoding on the GPU").
TOLERANCE = {"max": 0.02, "mean": 1e-3}
_INTERPOLATION = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}


@dataclass(frozen=True)
class TensorPreprocess:
    """An open_clip inference transform (resize, centre crop, to float, normalise) on uint8 [3, H, W] tensors."""

    size: int
    resize_mode: str
    interpolation: InterpolationMode
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, backbone: Backbone) -> TensorPreprocess | None:
        """The tower's transform from its fingerprint meta; None where it is not one this module restates
        ('longest' pads, a non-square size): those towers keep the CPU path."""
        pre = backbone.meta.get("preprocess", {})
        size, mode, interp = pre.get("size"), pre.get("resize_mode"), pre.get("interpolation")
        if isinstance(size, list | tuple) and len(size) == 2 and size[0] == size[1]:
            size = size[0]
        if not isinstance(size, int) or mode not in ("shortest", "squash") or interp not in _INTERPOLATION:
            return None
        return cls(size, mode, _INTERPOLATION[interp], tuple(pre["mean"]), tuple(pre["std"]))

    def __call__(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """uint8 [3, H_i, W_i] images (one device) -> float32 [B, 3, S, S]. Images of one size are resized
        together (Flickr8k has a handful of sizes), each group with one call."""
        s = self.size
        out = torch.empty((len(images), 3, s, s), dtype=torch.float32, device=images[0].device)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(tuple(im.shape), []).append(i)
        for idx in groups.values():
            x = torch.stack([images[i] for i in idx])
            x = TF.resize(x, [s] if self.resize_mode == "shortest" else [s, s], self.interpolation, antialias=True)
            out[idx] = TF.center_crop(x, [s, s]).float().div_(255.0)
        return TF.normalize(out, list(self.mean), list(self.std), inplace=True)


def on_device(backbone: Backbone) -> bool:
    """Whether extraction decodes this tower's images on its device: CUDA, and a transform `TensorPreprocess`
    restates."""
    return backbone.device.type == "cuda" and TensorPreprocess.of(backbone) is not None


class JpegFiles(sources.ImageFiles):
    """A baseline RGB JPEG's bytes (uint8 [N]) for the device to decode; anything else decoded and preprocessed
    here as on the CPU path (float [3, S, S]), or its error. Items: (index, payload or None, error or None)."""

    def __getitem__(self, i: int):
        from PIL import Image

        path, _ = self._path(i)
        try:
            if path is None:
                raise FileNotFoundError(i)
            if isinstance(path, Path):
                data = path.read_bytes()
            else:
                with path:
                    data = path.read()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(io.BytesIO(data))
            check_image_size(*im.size, self._where(i))
            direct = im.format == "JPEG" and im.mode == "RGB" and not im.info.get("progressive")
        except Exception:  # missing, unreadable, too large: the CPU path gives the reason it always gives
            direct = False
        if not direct:
            return super().__getitem__(i)
        return i, torch.frombuffer(bytearray(data), dtype=torch.uint8), None


def decode(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """JPEG bytes -> uint8 [3, H, W] on `device`, None for each image the decoder refuses. One batched call;
    after a failure (which names no image), one call per image finds the broken ones."""
    try:
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        pass
    out: list[torch.Tensor | None] = []
    for d in data:
        try:
            out.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            out.append(None)
    return out


def device_image_batches(
    backbone: Backbone, records: list[Record], batch_size: int, workers: int
) -> Iterator[sources.Encoded | sources.Skipped]:
    """`sources.image_batches` with decoding and preprocessing on `backbone.device` (module docstring); also
    runs on a CPU backbone, where decode_jpeg uses libjpeg-turbo (how the tests compare it with the PIL path)."""
    transform = TensorPreprocess.of(backbone)
    if transform is None:
        raise ValueError(f"{backbone.name}: its preprocessing cannot run as tensors; use sources.image_batches")
    files, cpu = JpegFiles(records, backbone.preprocess), sources.ImageFiles(records, backbone.preprocess)
    pin = backbone.device.type == "cuda"
    loader = sources.decoding_loader(
        files, fixed_batches(len(records), batch_size), workers, sources.collate_items, pin
    )
    for ok, payloads, errors in loader:
        for i, err in errors:
            yield sources.Skipped(records[i], err)
        jpeg = [k for k, p in enumerate(payloads) if p.dtype == torch.uint8]
        images = dict(zip(jpeg, decode([payloads[k] for k in jpeg], backbone.device)))
        ready = {k: p.to(backbone.device, non_blocking=True) for k, p in enumerate(payloads) if k not in images}
        fallback = len(ready)
        for k in [k for k in jpeg if images[k] is None]:  # refused by the device decoder: the CPU path decides
            _, x, err = cpu[ok[k]]
            fallback += 1
            if x is None:
                yield sources.Skipped(records[ok[k]], err)
            else:
                ready[k] = x.to(backbone.device)
        decoded = [k for k in jpeg if images[k] is not None]
        keep = sorted([*ready, *decoded])
        if not keep:
            continue
        batch = torch.empty((len(keep), 3, transform.size, transform.size), device=backbone.device)
        at = {k: n for n, k in enumerate(keep)}
        if decoded:
            batch[[at[k] for k in decoded]] = transform([im for k in decoded if (im := images[k]) is not None])
        for k, x in ready.items():
            batch[at[k]] = x
        if backbone.device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        yield sources.Encoded([records[ok[k]] for k in keep], sources.encode(backbone, batch), fallback=fallback)


def image_batches(
    backbone: Backbone, records: list[Record], batch_size: int, workers: int, views: ViewSpec | None = None
) -> Iterator[sources.Encoded | sources.Skipped]:
    """Extraction's images: decoded on the device where `on_device` says so (without augmented views, which
    are PIL transforms), else `sources.image_batches` on the CPU."""
    if views is None and on_device(backbone):
        return device_image_batches(backbone, records, batch_size, workers)
    return sources.image_batches(backbone, records, batch_size, workers, views)
