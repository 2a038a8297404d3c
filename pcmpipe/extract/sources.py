"""Turn dataset records into feature batches, one generator per modality kind.

Each generator yields `Encoded(records, features)` for rows to write and `Skipped(record, reason)` for
inputs that cannot be encoded (missing or unreadable file, empty caption, too-short audio, bad vector).
Decoding runs in DataLoader workers (images, audio), which die with the process that started them, even when
it is SIGKILLed; encoding runs in the main process under `torch.inference_mode()` and the backbone's autocast
(`pcmpipe.extract.precision`: fp16 on CUDA, none on CPU, unless `--precision` says otherwise).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from pcmpipe.augment.views import ViewSpec, image_view_transform, view_seed
from pcmpipe.backbones import Backbone
from pcmpipe.backbones.batching import fixed_batches
from pcmpipe.backbones.speech import SPEECH_MAX_PADDING
from pcmpipe.datasets import Record, load_audio
from pcmpipe.datasets.media import MediaTooLarge, check_image_size
from pcmpipe.errors import UserError
from pcmpipe.extract import precision
from pcmpipe.extract.batching import PaddingMeter

VECTOR_BATCH = 4096


@dataclass
class Encoded:
    records: list[Record]
    features: np.ndarray  # float32 [B, *shape]
    views: np.ndarray | None = None  # float32 [B, K, *shape]: the augmented views (`--views K`), else None
    fallback: int = 0  # images of this batch decoded on the CPU where the device decodes the rest (extract.decode)


@dataclass
class Skipped:
    record: Record
    reason: str


def encode(backbone: Backbone, batch) -> np.ndarray:
    """backbone.encode under inference mode and the backbone's autocast (`precision`) -> float32 numpy [B, *shape]."""
    with torch.inference_mode(), precision.autocast(backbone):
        out = backbone.encode(batch)
    return out.float().cpu().numpy()


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> None:
    """End this worker when `parent` (the process that started the loader) dies, even by SIGKILL.

    A SIGKILLed parent runs no cleanup, and its workers, reparented to init, kept hundreds of MB each for
    minutes. On Linux the kernel delivers SIGKILL on the parent's death (PR_SET_PDEATHSIG); everywhere, a
    daemon thread also checks the parent once a second, which covers systems without prctl and a parent that
    died before the prctl call took effect.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # already orphaned before the request above
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="pcmpipe-parent-watch", daemon=True).start()


def _worker_init(parent: int, _: int) -> None:
    torch.set_num_threads(1)  # workers decode; letting each spawn a thread pool oversubscribes the cores
    _die_with_parent(parent)


def decoding_loader(
    dataset, batches: list[list[int]], workers: int, collate, pin: bool, prefetch: int = 4
) -> torch.utils.data.DataLoader:
    """Batches in the given order, decoded by `workers` single-threaded processes (0: in this process).
    Extraction and fine-tuning both read files through it."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=functools.partial(_worker_init, os.getpid()),
        pin_memory=pin,
        prefetch_factor=prefetch if workers else None,
    )


def _loader(dataset, batches: list[list[int]], workers: int, device: torch.device):
    return decoding_loader(dataset, batches, workers, collate_items, pin=device.type == "cuda")


def collate_items(items):
    """[(index, payload | None, error | None)] -> (ok indices, payloads, [(index, error)])."""
    ok = [(i, x) for i, x, err in items if err is None]
    return [i for i, _ in ok], [x for _, x in ok], [(i, err) for i, x, err in items if err is not None]


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


class _Unusable(Exception):
    """A file that decoded but cannot be encoded (audio too short, NaN samples); the message is the item's error."""


class _Files(torch.utils.data.Dataset):
    """Records whose payload is a file; an item is (index, decoded input or None, error or None).

    Every kind reads an item the same way (`__getitem__`): find the file, `decode` it, and turn each refusal into
    the item's error, named with the kind (`kind`). A kind gives its decoder (`decode`) and the exceptions by
    which that decoder says a file is unreadable (`decode_errors`, asked only when one was raised).
    """

    kind = "file"

    def __init__(self, records: Sequence[Record]):
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        path, missing = self._path(i)
        if path is None:
            return i, None, missing
        try:
            return i, self.decode(path, i), None
        except MediaTooLarge as e:  # refused from the header, before the decoder allocates anything
            return i, None, f"{self.kind} too large ({e})"
        except _Unusable as e:
            return i, None, str(e)
        except UserError as e:  # pcmpipe's own reading of the file refused it, in one line already
            return i, None, f"unreadable {self.kind} ({str(e)[:200]})"
        except self.decode_errors() as e:
            return i, None, f"unreadable {self.kind} ({_one_line(e)})"

    def decode(self, path: Path | BinaryIO, i: int):
        raise NotImplementedError

    def decode_errors(self) -> tuple[type[BaseException], ...]:
        raise NotImplementedError

    def _path(self, i: int) -> tuple[Path | BinaryIO | None, str | None]:
        """The item's file (or its bytes, for a blob: a tar member, a Hugging Face cell), or why there is none."""
        blob = self.records[i].blob
        if blob is not None:
            try:
                return blob.open(), None
            except OSError as e:
                return None, f"unreadable {blob.describe()} ({_one_line(e)})"
        path = self.records[i].path
        if path is None or not path.is_file():
            return None, f"missing file {path}"
        return path, None

    def _where(self, i: int) -> object:
        """The item's file as messages name it: its path, or where its bytes live."""
        blob = self.records[i].blob
        return blob.describe() if blob is not None else self.records[i].path


class ImageFiles(_Files):
    """Decode + transform one image per item -> (index, [3, S, S] or None, error or None)."""

    kind = "image"

    def __init__(self, records: Sequence[Record], transform):
        super().__init__(records)
        self.transform = transform

    def decode(self, path: Path | BinaryIO, i: int):
        from PIL import Image

        with warnings.catch_warnings():  # PIL warns of what check_image_size refuses anyway
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            check_image_size(*im.size, self._where(i))  # from the header: before a pixel is decoded
            im.load()  # truncated or corrupt data fails here, not later in a worker-less place
            return self.apply(im, i)

    def decode_errors(self) -> tuple[type[BaseException], ...]:
        from PIL import Image

        return (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)

    def apply(self, im, i: int):
        return self.transform(im)


class AudioFiles(_Files):
    """Decode one waveform per item (16 kHz mono float32) -> (index, [N] or None, error or None)."""

    kind = "audio"

    def __init__(self, records: Sequence[Record], min_samples: int):
        super().__init__(records)
        self.min_samples = min_samples

    def decode(self, path: Path | BinaryIO, i: int) -> np.ndarray:
        wave = load_audio(path, where=self._where(i))
        if wave.size < self.min_samples:
            raise _Unusable(f"audio too short ({wave.size} samples at 16 kHz, the encoder needs {self.min_samples})")
        if not np.isfinite(wave).all():
            raise _Unusable("audio holds NaN or infinite samples")
        return wave

    def decode_errors(self) -> tuple[type[BaseException], ...]:
        return (OSError, ValueError, RuntimeError)


class ImageViews:
    """An image's clean input (the tower's own preprocessing) and K seeded augmented ones -> [K + 1, 3, S, S]."""

    def __init__(self, preprocess, views: ViewSpec, meta: dict) -> None:
        self.preprocess, self.views = preprocess, views
        self.augment = image_view_transform(meta)

    def __call__(self, im, item_id: str) -> torch.Tensor:
        clean = self.preprocess(im)
        seeds = [view_seed(self.views.seed, item_id, v) for v in range(1, self.views.k + 1)]
        return torch.stack([clean, *(self.augment(im, s) for s in seeds)])


class ImageViewFiles(ImageFiles):
    """ImageFiles whose transform also sees the record's id (the seed of its views)."""

    def apply(self, im, i: int):
        return self.transform(im, self.records[i].id)


def image_batches(
    backbone: Backbone, records: list[Record], batch_size: int, workers: int, views: ViewSpec | None = None
) -> Iterator:
    """Images in record order, decoded by `workers` processes; with `views`, each image's K augmented views
    are encoded in the same forward pass as its clean input."""
    files = ImageFiles(records, backbone.preprocess)
    if views is not None:
        files = ImageViewFiles(records, ImageViews(backbone.preprocess, views, backbone.meta))
    # preprocessed images are all one size: length 1 each, so the backbone's rule keeps the records' order
    loader = _loader(files, backbone.batches([1] * len(records), batch_size), workers, backbone.device)
    for ok, tensors, errors in loader:
        for i, err in errors:
            yield Skipped(records[i], err)
        if not ok:
            continue
        batch = torch.stack(tensors)  # [B, 3, S, S], or [B, K + 1, 3, S, S] with views
        if views is None:
            yield Encoded([records[i] for i in ok], encode(backbone, batch))
            continue
        out = encode(backbone, batch.flatten(0, 1)).reshape(len(ok), views.k + 1, *backbone.feature_shape)
        yield Encoded([records[i] for i in ok], np.ascontiguousarray(out[:, 0]), np.ascontiguousarray(out[:, 1:]))


# captions whose augmented views are encoded together (`text_batches` with views): bounds the memory of the
# views held until their rows are written (2,048 x 5 x 512 float32 is 20 MB for CLIP at K = 4)
VIEW_CHUNK = 2048


def text_batches(backbone: Backbone, records: list[Record], batch_size: int, views: ViewSpec | None = None) -> Iterator:
    """Captions sorted by token length (the backbone's `token_lengths`); each batch runs on its longest sequence
    only. With `views`, captions go VIEW_CHUNK at a time: the clean and the K EDA views of every caption of a
    chunk are encoded (length-sorted together), then written."""
    good = []
    for r in records:
        if r.text is None or not r.text.strip():
            yield Skipped(r, "empty caption")
        else:
            good.append(r)
    if not good:
        return
    if views is None:
        for batch, feats in _encode_texts(backbone, [r.text or "" for r in good], batch_size):
            yield Encoded([good[i] for i in batch], feats)
        return
    from pcmpipe.augment import EDA

    eda = EDA(alpha=views.eda_alpha)
    for at in range(0, len(good), VIEW_CHUNK):
        chunk = good[at : at + VIEW_CHUNK]
        texts = [r.text or "" for r in chunk]
        for v in range(1, views.k + 1):
            # an augmented caption EDA emptied (all words deleted) keeps its clean text
            texts += [eda(r.text or "", view_seed(views.seed, r.id, v)) or (r.text or "") for r in chunk]
        out = np.empty((len(texts), *backbone.feature_shape), np.float32)
        for batch, feats in _encode_texts(backbone, texts, batch_size):
            out[batch] = feats
        out = out.reshape(views.k + 1, len(chunk), *backbone.feature_shape)
        yield Encoded(chunk, out[0], np.ascontiguousarray(out[1:].swapaxes(0, 1)))


def _encode_texts(backbone: Backbone, texts: list[str], batch_size: int) -> Iterator[tuple[list[int], np.ndarray]]:
    """(positions in `texts`, features) per length-sorted batch."""
    tokens = backbone.preprocess(texts)  # [N, context] int64
    lengths = backbone.token_lengths(tokens).tolist()
    for batch in backbone.batches(lengths, batch_size):
        yield batch, encode(backbone, tokens[batch])


def audio_batches(
    backbone: Backbone,
    records: list[Record],
    batch_size: int,
    workers: int,
    meter: PaddingMeter | None = None,
    max_padding: float | None = SPEECH_MAX_PADDING,
) -> Iterator:
    """Speech batched by the backbone's rule (`Backbone.batches`) on durations read from the file headers."""
    import scipy.signal  # noqa: F401  (load_audio's resampler: imported once here, before workers fork)
    import soundfile as sf

    durations = []
    for r in records:
        try:
            info = sf.info(r.blob.open() if r.blob is not None else str(r.path))
            durations.append(int(info.frames * 16_000 / info.samplerate))
        except Exception:  # unreadable header: the worker reports why; sort it first
            durations.append(0)
    batches = backbone.batches(durations, batch_size, max_padding)
    loader = _loader(AudioFiles(records, backbone.min_length()), batches, workers, backbone.device)
    for ok, waves, errors in loader:
        for i, err in errors:
            yield Skipped(records[i], err)
        if ok:
            if meter is not None:
                meter.add([w.size for w in waves])
            yield Encoded([records[i] for i in ok], encode(backbone, backbone.preprocess(waves)))


def vector_batches(records: list[Record], shape: tuple[int, ...]) -> Iterator:
    """Precomputed vectors (attributes A, class embeddings C) of `shape`: checked, then written as they are."""
    good: list[Record] = []
    for r in records:
        v = None if r.vector is None else np.asarray(r.vector, dtype=np.float32)
        if v is None or v.size == 0:
            yield Skipped(r, "no vector")
        elif v.shape != shape:
            yield Skipped(r, f"vector of shape {v.shape}, the others have {shape}")
        elif not np.isfinite(v).all():
            yield Skipped(r, "vector holds NaN or infinite values")
        else:
            good.append(r)
    for batch in fixed_batches(len(good), VECTOR_BATCH):
        recs = [good[i] for i in batch]
        yield Encoded(recs, np.stack([np.asarray(r.vector, dtype=np.float32) for r in recs]))


def vector_shape(records: list[Record]) -> tuple[int, ...] | None:
    """Shape of the first usable (non-empty, finite) vector: the cache's feature shape; None if none is."""
    for r in records:
        v = None if r.vector is None else np.asarray(r.vector, dtype=np.float32)
        if v is not None and v.size and np.isfinite(v).all():
            return tuple(v.shape)
    return None
