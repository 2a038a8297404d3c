"""Media the service reads or sends: a stored row's file (only from a recorded dataset root), its thumbnail, and
an uploaded query file (bounded, of a known type, checked before it is decoded).

A row's file is never named by the client: a URL names (run, modality, id), the id is looked up in what the
dataset reader listed for that split, and the path found is resolved (symbolic links followed) and must still
lie under one of the dataset roots the run's caches recorded. An id like `../../etc/passwd` is just an id that
is not in the table; a symbolic link in the dataset pointing elsewhere is refused.

Thumbnails are made on first request and kept in memory (an LRU of at most THUMBNAILS entries, keyed by path,
size and mtime): nothing is written to disk, so a killed service leaves nothing behind.
"""

from __future__ import annotations

import io
import mimetypes
import threading
from collections import OrderedDict
from pathlib import Path

from pcmpipe.datasets.media import MAX_PIXELS, MediaTooLarge, check_image_size
from pcmpipe.errors import UserError

THUMB_SIDE = 256  # longest side of a thumbnail, pixels
THUMBNAILS = 4096  # thumbnails kept in memory (about 15 KB each as JPEG: ~60 MB)
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # one query file; a photo or a 80 s clip fits
# what an uploaded query may be, by its first bytes (the client's file name and content type are not trusted)
IMAGE_MAGIC = {b"\xff\xd8\xff": ".jpg", b"\x89PNG\r\n\x1a\n": ".png", b"GIF87a": ".gif", b"GIF89a": ".gif"}
AUDIO_MAGIC = {b"RIFF": ".wav", b"fLaC": ".flac", b"OggS": ".ogg"}


class NotServable(UserError):
    """A media request that names nothing the service may send (answered 404)."""


def inside_roots(path: str | Path, roots: list[Path]) -> Path:
    """The real file behind `path`, when it lies under one of `roots` (both resolved); NotServable otherwise."""
    try:
        real = Path(path).resolve(strict=True)
    except (OSError, RuntimeError):
        raise NotServable("the file of this row is gone") from None
    if not any(real.is_relative_to(root.resolve()) for root in roots):
        raise NotServable("the file of this row lies outside the dataset roots the run recorded")
    if not real.is_file():
        raise NotServable("the file of this row is not a regular file")
    return real


def media_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _open_checked(source: Path | io.BytesIO, where: str):
    """A PIL image whose header was checked (pixels, aspect) before any pixel is decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(source)
        check_image_size(img.width, img.height, where)
        img.draft("RGB", (THUMB_SIDE, THUMB_SIDE))  # JPEG: decode at a reduced scale directly
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"{where} is not an image pcmpipe can read ({type(err).__name__})") from None
    return img


class Thumbnails:
    """JPEG thumbnails of stored images, made on first request, kept in a bounded in-memory LRU."""

    def __init__(self, capacity: int = THUMBNAILS) -> None:
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()  # requests run in a thread pool

    def get(self, path: Path) -> bytes:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        img = _open_checked(path, path.name)
        img = img.convert("RGB")
        img.thumbnail((THUMB_SIDE, THUMB_SIDE))
        out = io.BytesIO()
        img.save(out, "JPEG", quality=85)
        data = out.getvalue()
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return data


def upload_suffix(head: bytes, kind: str) -> str:
    """The file suffix of an uploaded query from its first bytes; one line when it is not a `kind` file."""
    table = IMAGE_MAGIC if kind == "image" else AUDIO_MAGIC if kind == "audio" else {}
    for magic, suffix in table.items():
        if head.startswith(magic):
            if suffix == ".wav" and head[8:12] != b"WAVE":
                break
            return suffix
    wanted = "JPEG, PNG or GIF" if kind == "image" else "WAV, FLAC or Ogg" if kind == "audio" else "no file"
    raise UserError(
        f"the uploaded file is not {'an' if kind in ('image', 'audio') else 'a'} {kind} file this "
        f"service takes ({wanted})"
    )


def check_upload(data: bytes, kind: str, limit: int = MAX_UPLOAD_BYTES) -> str:
    """An uploaded query's bytes -> its suffix, once its size, type and (images) header are within bounds."""
    if not data:
        raise UserError("the uploaded file is empty")
    if len(data) > limit:
        raise UserError(f"the uploaded file has {len(data):,} bytes; this service takes up to {limit:,}")
    suffix = upload_suffix(data[:16], kind)
    if kind == "image":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as img:  # the header only: no pixel is decoded here
                check_image_size(img.width, img.height, "the uploaded image")
        except Image.DecompressionBombError:  # PIL's own guard, above twice its limit, fires in open()
            raise MediaTooLarge(
                f"the uploaded image declares more pixels than the {MAX_PIXELS:,} pcmpipe decodes"
            ) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise UserError(f"the uploaded image cannot be read ({type(err).__name__})") from None
    return suffix
