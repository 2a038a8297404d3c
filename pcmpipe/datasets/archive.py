"""Unpacking downloaded archives (zip, tar, tar.gz) without letting a member escape the target.

Every member is checked before anything is written, so a refused archive leaves the target untouched:
no absolute paths, no `..` that leaves the target, no symlink or hardlink whose target lies outside it,
no device files or FIFOs. macOS resource forks (`__MACOSX/`, which the Flickr8k zips carry) are skipped.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from pcmpipe.errors import UserError

SKIP_PREFIXES = ("__MACOSX/",)


def _inside(target: str, name: str) -> bool:
    """True when `name` (relative, posix) joined to `target` stays inside `target`."""
    joined = os.path.normpath(os.path.join(target, name))
    return joined == target or joined.startswith(target + os.sep)


def _check_name(archive: Path, target: str, name: str) -> None:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise UserError(f"refusing to unpack {archive.name}: member {name!r} has an absolute path")
    if not _inside(target, str(pure)):
        raise UserError(f"refusing to unpack {archive.name}: member {name!r} would be written outside {target}")


def _check_link(archive: Path, target: str, name: str, link: str, hard: bool) -> None:
    kind = "hardlink" if hard else "symlink"
    if os.path.isabs(link):
        raise UserError(f"refusing to unpack {archive.name}: {kind} {name!r} points to absolute path {link!r}")
    # a symlink resolves against its own folder; a tar hardlink names another member of the archive
    where = link if hard else os.path.join(os.path.dirname(name), link)
    if not _inside(target, where):
        raise UserError(f"refusing to unpack {archive.name}: {kind} {name!r} -> {link!r} points outside {target}")


def _skipped(name: str) -> bool:
    return name.startswith(SKIP_PREFIXES)


def safe_extract(archive: Path | str, target: Path | str) -> list[str]:
    """Unpack `archive` into `target` after checking every member; returns the member names written."""
    archive, target_path = Path(archive), Path(target)
    target_path.mkdir(parents=True, exist_ok=True)
    target_s = os.path.realpath(target_path)
    if zipfile.is_zipfile(archive):
        return _extract_zip(archive, target_s)
    try:
        tf = tarfile.open(archive)
    except tarfile.TarError:
        raise UserError(
            f"{archive} is neither a zip nor a tar archive (corrupt download? delete it and retry)"
        ) from None
    with tf:
        return _extract_tar(archive, tf, target_s)


def _extract_tar(archive: Path, tf: tarfile.TarFile, target: str) -> list[str]:
    try:
        members = [m for m in tf.getmembers() if not _skipped(m.name)]
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UserError(f"{archive} is truncated or corrupt ({e}); delete it and download again") from None
    for m in members:
        _check_name(archive, target, m.name)
        if m.issym() or m.islnk():
            _check_link(archive, target, m.name, m.linkname, hard=m.islnk())
        elif not (m.isfile() or m.isdir()):
            raise UserError(f"refusing to unpack {archive.name}: member {m.name!r} is a device file or FIFO")
    # the "data" filter (PEP 706) repeats these checks inside tarfile and drops unsafe permission bits
    try:
        tf.extractall(target, members=members, filter="data")
    except tarfile.FilterError as e:
        raise UserError(f"refusing to unpack {archive.name}: {e}") from None
    return [m.name for m in members]


def _extract_zip(archive: Path, target: str) -> list[str]:
    with zipfile.ZipFile(archive) as zf:
        infos = [i for i in zf.infolist() if not _skipped(i.filename)]
        links = {}
        for info in infos:
            _check_name(archive, target, info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                link = zf.read(info).decode("utf-8", "replace")
                _check_link(archive, target, info.filename, link, hard=False)
                links[info.filename] = link
            elif stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # 0: no type recorded
                raise UserError(f"refusing to unpack {archive.name}: member {info.filename!r} is a device file or FIFO")
        try:
            for info in infos:
                dest = Path(target) / info.filename
                # links created by earlier members must not redirect this one (e.g. "s" -> "." then "s/../x")
                if not _inside(target, os.path.relpath(os.path.realpath(dest.parent), target)):
                    raise UserError(
                        f"refusing to unpack {archive.name}: member {info.filename!r} resolves outside {target}"
                    )
                if dest.is_symlink():  # left by an earlier unpack: never write through it
                    dest.unlink()
                if info.filename in links:
                    real = os.path.realpath(os.path.join(dest.parent, links[info.filename]))
                    if not _inside(target, os.path.relpath(real, target)):
                        raise UserError(
                            f"refusing to unpack {archive.name}: symlink {info.filename!r} resolves outside {target}"
                        )
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(links[info.filename], dest)
                elif info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                else:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
        except (zipfile.BadZipFile, zlib.error) as e:
            raise UserError(f"{archive} is corrupt ({e}); delete it and download again") from None
    return [i.filename for i in infos]
