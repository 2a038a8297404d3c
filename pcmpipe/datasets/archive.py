"""Unpacking downloaded archives (zip, tar, tar.gz) without letting a member escape the target or fill the disk.

Every member is checked before anything is written: no absolute paths, no `..` that leaves the target, no
symlink or hardlink whose target lies outside it, no device files or FIFOs, and the sizes fit the limits
(`UnpackLimits`: total unpacked bytes, unpacked/packed ratio, free disk space). The archive is then unpacked
into a hidden working directory inside the target and moved in only when every member was written, so a
refused, corrupt or killed unpack leaves the target as it was (a killed one's working directory is removed
by the next unpack). macOS resource forks (`__MACOSX/`, which the Flickr8k zips carry) are skipped.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pcmpipe import tempdirs
from pcmpipe.errors import UserError

SKIP_PREFIXES = ("__MACOSX/",)
WORK_PREFIX = "unpack"
GB = 1 << 30


@dataclass(frozen=True)
class UnpackLimits:
    """What an archive may expand to. The defaults fit the real archives with room to spare: Flickr8k's images
    (1.1 GB), its audio corpus (about 4 GB of wavs) and CUB (1.2 GB) unpack to under 5 GB each at ratios
    below 5 (JPEGs and wavs barely compress; the caption text files reach about 4). A zip bomb reaches 1000
    and more. `pcmpipe download --max-unpack-gb / --max-ratio` raise them."""

    max_bytes: int = 32 * GB  # all members together, unpacked
    max_ratio: float = 100.0  # unpacked / packed: per member in a zip, the whole stream in a tar.gz


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


def _size(n: float) -> str:
    """1536 -> '1.5 KB' (binary units, as `du -h` shows them)."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _check_sizes(archive: Path, target: Path, sizes: list[tuple[str, int, int]], limits: UnpackLimits) -> None:
    """sizes: (member, unpacked, packed); packed 0 means unknown (tar members: the ratio is the whole stream's)."""
    total = sum(s for _, s, _ in sizes)
    raise_hint = "if you trust it, raise the limit with --max-unpack-gb / --max-ratio"
    if total > limits.max_bytes:
        raise UserError(
            f"refusing to unpack {archive.name}: it expands to {_size(total)}, over the "
            f"{_size(limits.max_bytes)} limit ({raise_hint})"
        )
    packed = archive.stat().st_size
    for name, size, member_packed in sizes:
        if member_packed and size > limits.max_ratio * member_packed:
            raise UserError(
                f"refusing to unpack {archive.name}: member {name!r} expands {size / member_packed:.0f}x "
                f"({_size(member_packed)} -> {_size(size)}), over the {limits.max_ratio:g}x limit ({raise_hint})"
            )
    if not any(p for _, _, p in sizes) and packed and total > limits.max_ratio * packed:
        raise UserError(
            f"refusing to unpack {archive.name}: {_size(packed)} expand {total / packed:.0f}x to {_size(total)}, "
            f"over the {limits.max_ratio:g}x limit ({raise_hint})"
        )
    free = shutil.disk_usage(target).free
    if total > free:
        raise UserError(
            f"not enough space to unpack {archive.name} into {target}: it needs {_size(total)}, {_size(free)} are free"
        )


def _skipped(name: str) -> bool:
    return name.startswith(SKIP_PREFIXES)


def safe_extract(archive: Path | str, target: Path | str, limits: UnpackLimits | None = None) -> list[str]:
    """Unpack `archive` into `target` after checking every member; returns the member names written."""
    archive, target_path = Path(archive), Path(target)
    limits = limits or UnpackLimits()
    target_path.mkdir(parents=True, exist_ok=True)
    tempdirs.remove_dead(target_path, WORK_PREFIX)
    if zipfile.is_zipfile(archive):
        opened = None
    else:
        try:
            opened = tarfile.open(archive)
        except tarfile.TarError:
            raise UserError(
                f"{archive} is neither a zip nor a tar archive (corrupt download? delete it and retry)"
            ) from None
    try:
        # every check runs against the working directory, where the members are written first
        work = None
        if opened is None:
            with zipfile.ZipFile(archive) as zf:
                infos = _check_zip(archive, zf, target_path, limits)
                work = tempdirs.make(target_path, WORK_PREFIX)
                _extract_zip(archive, zf, infos, os.path.realpath(work))
            names = [i.filename for i in infos]
        else:
            members = _check_tar(archive, opened, target_path, limits)
            work = tempdirs.make(target_path, WORK_PREFIX)
            _extract_tar(archive, opened, members, os.path.realpath(work))
            names = [m.name for m in members]
        _move_into(work, target_path)
    finally:
        if opened is not None:
            opened.close()
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    return names


def _move_into(src: Path, dest: Path) -> None:
    """Move every entry of `src` into `dest`, merging folders that exist in both; a file replaces the old one.
    Links are moved as links and never followed, neither in `src` nor in `dest`."""
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        there = dest / entry.name
        if entry.is_dir(follow_symlinks=False) and there.is_dir() and not there.is_symlink():
            _move_into(Path(entry.path), there)
            continue
        if there.is_symlink():  # left by an earlier unpack: replaced, never written through
            there.unlink()
        elif there.is_dir():
            shutil.rmtree(there)
        os.replace(entry.path, there)


def _check_tar(archive: Path, tf: tarfile.TarFile, target: Path, limits: UnpackLimits) -> list[tarfile.TarInfo]:
    try:
        members = [m for m in tf.getmembers() if not _skipped(m.name)]
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise UserError(f"{archive} is truncated or corrupt ({e}); delete it and download again") from None
    where = os.path.realpath(target)
    for m in members:
        _check_name(archive, where, m.name)
        if m.issym() or m.islnk():
            _check_link(archive, where, m.name, m.linkname, hard=m.islnk())
        elif not (m.isfile() or m.isdir()):
            raise UserError(f"refusing to unpack {archive.name}: member {m.name!r} is a device file or FIFO")
    _check_sizes(archive, target, [(m.name, m.size, 0) for m in members if m.isfile()], limits)
    return members


def _extract_tar(archive: Path, tf: tarfile.TarFile, members: list[tarfile.TarInfo], work: str) -> None:
    # the "data" filter (PEP 706) repeats these checks inside tarfile (it sees links made by earlier members,
    # e.g. "a/b -> .." then "a/b/c -> ..") and drops unsafe permission bits
    try:
        tf.extractall(work, members=members, filter="data")
    except tarfile.FilterError as e:
        raise UserError(f"refusing to unpack {archive.name}: {str(e).replace(work, 'the target')}") from None
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise UserError(f"{archive} is truncated or corrupt ({e}); delete it and download again") from None


def _check_zip(archive: Path, zf: zipfile.ZipFile, target: Path, limits: UnpackLimits) -> list[zipfile.ZipInfo]:
    infos = [i for i in zf.infolist() if not _skipped(i.filename)]
    where = os.path.realpath(target)
    for info in infos:
        _check_name(archive, where, info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            _check_link(archive, where, info.filename, _zip_link(zf, info), hard=False)
        elif stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # 0: no type recorded
            raise UserError(f"refusing to unpack {archive.name}: member {info.filename!r} is a device file or FIFO")
    # zipfile never reads past a member's declared size, so the declared sizes bound what is written
    _check_sizes(archive, target, [(i.filename, i.file_size, max(i.compress_size, 1)) for i in infos], limits)
    return infos


def _zip_link(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    return zf.read(info).decode("utf-8", "replace")


def _extract_zip(archive: Path, zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], work: str) -> None:
    try:
        for info in infos:
            dest = Path(work) / info.filename
            # links created by earlier members must not redirect this one (e.g. "s" -> "." then "s/../x")
            if not _inside(work, os.path.relpath(os.path.realpath(dest.parent), work)):
                raise UserError(f"refusing to unpack {archive.name}: member {info.filename!r} resolves outside")
            if stat.S_ISLNK(info.external_attr >> 16):
                link = _zip_link(zf, info)
                real = os.path.realpath(os.path.join(dest.parent, link))
                if not _inside(work, os.path.relpath(real, work)):
                    raise UserError(f"refusing to unpack {archive.name}: symlink {info.filename!r} resolves outside")
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(link, dest)
            elif info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    except (zipfile.BadZipFile, zlib.error) as e:
        raise UserError(f"{archive} is corrupt ({e}); delete it and download again") from None
