"""`pcmpipe download`: fetch the official archives, verify them, unpack them safely.

Transfers go to `<root>/downloads/<file>.part` and resume with an HTTP Range request, both when the
connection drops (retried here) and when the command is run again. A finished file is checked against
its published md5; on a mismatch it is moved to `<file>.bad` (kept for inspection, never resumed from)
and the command fails, so the next run starts afresh. Every file's md5 and sha256 are recorded in
`<root>/downloads/DOWNLOADS.json`. Files from a repository at a pinned commit (PCME's CUB split list) are
checked against a sha256 pinned here, and copied into `<root>` as they are (they are not archives). Base
URLs can be redirected to a mirror with `--base-url` or the PCMPIPE_DOWNLOAD_BASE environment variable
(the file name is appended).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pcmpipe.atomic import fsync_path, write_bytes, write_json
from pcmpipe.atomic import replace as durable_replace
from pcmpipe.datasets.archive import UnpackLimits, safe_extract
from pcmpipe.datasets.cub import PCME_VAL_SHA256, PCME_VAL_URL
from pcmpipe.errors import UserError

BASE_ENV = "PCMPIPE_DOWNLOAD_BASE"
CHUNK = 1 << 20
USER_AGENT = "pcmpipe-download/0.1"
# more attempts than this never rescue a transfer (the back-off is capped at 5 s each): a typo, not a choice
MAX_RETRIES = 1000


@dataclass(frozen=True)
class Source:
    """One file: where it lives, its published md5 (None when the publisher gives none), a sha256 pinned
    here (a file at a fixed commit), and whether it is an archive to unpack or a file to copy into root."""

    url: str
    md5: str | None
    sha256: str | None = None
    unpack: bool = True

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


SOURCES: dict[str, list[Source]] = {
    "flickr8k": [
        Source(
            "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip",
            "f18a1e2920de5bd84dae7cf08ec78978",
        ),
        Source(
            "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_text.zip",
            "bf6c1abcb8e4a833b7f922104de18627",
        ),
        # the md5 listed under "Data downloads" on the corpus page (groups.csail.mit.edu/sls/downloads/
        # flickraudio/), read from a public copy of that page's text (docs/datasets.md, "Downloads")
        Source(
            "https://groups.csail.mit.edu/sls/downloads/flickraudio/downloads/flickr_audio.tar.gz",
            "9d078f1f150c26e864aa64d1d733779a",
        ),
    ],
    "cub": [
        Source(
            "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz", "97eceeb196236b17998738112f37df78"
        ),
        # PCME's held-out images of the 150 seen classes: the reader's default val split (datasets/cub.py)
        Source(PCME_VAL_URL, None, sha256=PCME_VAL_SHA256, unpack=False),
    ],
}

# What cannot be fetched automatically, and where it goes.
MANUAL: dict[str, str] = {
    "cub": (
        "CUB captions (Reed et al., 2016) are on Google Drive and cannot be fetched automatically: download "
        "cvpr2016_cub.tar.gz from https://drive.google.com/file/d/0B0ywwgffWnLLZW9uVHNjb2JmNlE/view"
        "?resourcekey=0-8y2UVmBHAlG26HafWYNoFQ (linked from https://github.com/reedscot/cvpr2016) and unpack "
        "it into ROOT so that ROOT/cvpr2016_cub/text_c10/<NNN.Class>/<image>.txt exist "
        "(ROOT/text_c10 and ROOT/cub_text/text_c10 work too)."
    ),
}

Progress = Callable[[str, int, int | None], None]  # (file name, bytes so far, total or None)


def file_digests(path: Path, algos: tuple[str, ...] = ("md5", "sha256")) -> dict[str, str]:
    """Each algorithm's hex digest of the file, in one read (the audio archive alone is 4.2 GB)."""
    hs = {algo: hashlib.new(algo) for algo in algos}
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            for h in hs.values():
                h.update(block)
    return {algo: h.hexdigest() for algo, h in hs.items()}


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _transfer(url: str, part: Path, timeout: float, progress: Progress | None) -> None:
    """Append the rest of `url` to `part` once; raises OSError / HTTPException when the transfer breaks."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, offset, timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to fetch: the .part is already whole
            return
        raise UserError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
    with resp:
        if resp.status == 206 and not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            part.unlink(missing_ok=True)  # a piece from elsewhere in the file: start over on the next attempt
            raise ConnectionError(f"server answered another range: {resp.headers.get('Content-Range')}")
        if offset and resp.status != 206:
            offset = 0  # the server ignored Range: start over
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        done = offset
        with open(part, "ab" if offset else "wb") as out:
            while block := resp.read(CHUNK):
                out.write(block)
                done += len(block)
                if progress:
                    progress(part.name[: -len(".part")], done, total)
    if total is not None and done < total:
        # http.client returns b"" when the peer closes early, so a short body must be caught here
        raise http.client.IncompleteRead(b"", total - done)


def fetch(
    url: str,
    dest: Path,
    md5: str | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    progress: Progress | None = None,
    sha256: str | None = None,
) -> Path:
    """Download `url` to `dest` through `dest.part`, resuming after breaks; verify `md5` / `sha256` when given.

    An existing `dest` is re-verified and kept. A checksum mismatch moves the file to `dest.bad`
    and raises UserError.
    """
    checks = [(algo, want) for algo, want in (("md5", md5), ("sha256", sha256)) if want is not None]
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if dest.exists():
        found = file_digests(dest, tuple(algo for algo, _ in checks))
        for algo, want in checks:
            if found[algo] != want:
                raise UserError(f"{dest} does not match its {algo} {want}; delete it and run the command again")
        return dest
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, timeout, progress)
            break
        except (OSError, http.client.HTTPException) as e:
            if attempt == retries:
                have = part.stat().st_size if part.exists() else 0
                raise UserError(
                    f"download of {url} broke off after {have} bytes ({type(e).__name__}); "
                    f"run the command again to resume from {part}"
                ) from None
            time.sleep(min(0.2 * 2**attempt, 5.0))
    got_all = file_digests(part, tuple(algo for algo, _ in checks))
    for algo, want in checks:
        got = got_all[algo]
        if got != want:
            bad = dest.with_name(dest.name + ".bad")
            os.replace(part, bad)
            raise UserError(
                f"checksum mismatch for {dest.name}: {algo} {got}, expected {want}; moved to {bad}, "
                "run the command again"
            )
    fsync_path(part)  # appended across resumes: make the whole file durable before it takes the final name
    durable_replace(part, dest)
    return dest


def check_base_url(base: str, what: str) -> None:
    """A mirror folder URL must be http(s)://HOST/... or file:///...; anything else fails later inside urllib."""
    parts = urllib.parse.urlsplit(base)
    if parts.scheme in ("http", "https") and parts.netloc or parts.scheme == "file" and parts.path:
        return
    raise UserError(f"{what} {base!r} is not a URL; give a folder URL such as https://mirror.example.org/flickr8k")


def _verified(src: Source) -> str:
    if src.md5:
        return "md5"
    if src.sha256:
        return "sha256 (pinned in pcmpipe)"
    return "none (no checksum pinned; md5 and sha256 recorded)"


def _record(downloads: Path, name: str, entry: dict) -> None:
    """Add one file's provenance to DOWNLOADS.json (url, md5, sha256, bytes)."""
    path = downloads / "DOWNLOADS.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = entry
    write_json(path, data, sort_keys=True)


def download(
    name: str,
    root: Path | str,
    base_url: str | None = None,
    sources: list[Source] | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    progress: Progress | None = None,
    limits: UnpackLimits | None = None,
) -> dict:
    """Fetch, verify and unpack every archive of dataset `name` into `root`; returns a summary.

    `base_url` (or $PCMPIPE_DOWNLOAD_BASE) replaces each URL's folder; `sources` replaces the list.
    Archives stay in root/downloads/; an archive already unpacked (marker file) is not unpacked again.
    `limits`: how far an archive may expand (archive.UnpackLimits; its defaults fit the real archives).
    """
    if name not in SOURCES:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(SOURCES)}")
    if not 0 <= retries <= MAX_RETRIES:
        raise UserError(f"--retries must be between 0 and {MAX_RETRIES} resume attempts per file, got {retries}")
    root = Path(root).expanduser()
    downloads = root / "downloads"
    base = base_url or os.environ.get(BASE_ENV)
    if base:
        check_base_url(base, "--base-url" if base_url else f"${BASE_ENV}")
    summary: dict = {"dataset": name, "root": str(root), "files": {}, "manual": MANUAL.get(name)}
    for src in sources if sources is not None else SOURCES[name]:
        url = f"{base.rstrip('/')}/{src.filename}" if base else src.url
        path = fetch(
            url,
            downloads / src.filename,
            md5=src.md5,
            sha256=src.sha256,
            retries=retries,
            timeout=timeout,
            progress=progress,
        )
        digests = file_digests(path)
        sha256 = digests["sha256"]
        entry = {
            "url": url,
            "bytes": path.stat().st_size,
            "md5": digests["md5"],
            "sha256": sha256,
            "verified": _verified(src),
        }
        _record(downloads, src.filename, entry)
        if not src.unpack:  # a plain file: the reader finds it at root/<name>
            placed = root / src.filename
            if not placed.is_file() or file_digests(placed, ("sha256",))["sha256"] != sha256:
                write_bytes(placed, path.read_bytes())
        else:
            marker = downloads / f".unpacked-{src.filename}"
            if not marker.exists() or marker.read_text().strip() != sha256:
                safe_extract(path, root, limits)
                marker.write_text(sha256 + "\n")
        summary["files"][src.filename] = entry
    return summary
