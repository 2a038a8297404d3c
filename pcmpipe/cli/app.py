"""The typer app and what every command shares: the error guard.

Every command body runs inside `_guard`, which turns a `UserError` into one red line on stderr and exit
code 2, and so are filesystem errors (a full disk, a read-only or missing folder, a file where a folder
belongs) and file names that are not UTF-8. Heavy modules (torch, transformers) are imported inside the
commands so `pcmpipe --help` is fast.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

import typer
from rich.console import Console

from pcmpipe.cli.options import FlagGroup
from pcmpipe.errors import UserError

app = typer.Typer(
    cls=FlagGroup,
    name="pcmpipe",
    help="Cross-modal coordination across many modalities: extract features, train PCMC/PCMR heads, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


@app.callback()
def _options(
    verbose: bool = typer.Option(
        False, "--verbose", help="also show other libraries' progress bars, warnings and logs (hidden by default)"
    ),
) -> None:
    """Cross-modal coordination across many modalities: extract features, train PCMC/PCMR heads, report."""
    from pcmpipe.cli.quiet import quiet_third_party

    quiet_third_party(verbose)  # before any command imports transformers or builds a backbone


@contextlib.contextmanager
def _guard():
    """User errors end in one line and exit 2; KeyboardInterrupt exits 130 without a traceback."""
    try:
        yield
    except UserError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None  # the one line above is the whole story; no chained traceback
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None
    except OSError as e:
        if e.errno not in FILESYSTEM_ERRORS:  # a network error, or a bug: keep its traceback
            raise
        err_console.print(f"[bold red]error:[/] {filesystem_message(e)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except UnicodeEncodeError as e:
        if not _surrogates(e):
            raise
        err_console.print(f"[bold red]error:[/] {encoding_message(e)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


# Filesystem errors a user causes (where they point a command) and what to do about each; any other OSError is
# a bug and keeps its traceback. A full disk says how much room is left where the write failed.
FILESYSTEM_ERRORS = {
    errno.ENOSPC: "no space left on the device; free some space or choose another location",
    errno.EDQUOT: "disk quota exceeded; free some space or choose another location",
    errno.EFBIG: "file too large for this system's limits (ulimit -f, or the filesystem's largest file)",
    errno.EROFS: "read-only filesystem; choose a writable location",
    errno.EACCES: "permission denied; choose a location you can write to (or fix its permissions)",
    errno.EPERM: "operation not permitted; choose a location you can write to (or fix its permissions)",
    errno.ENOTDIR: "a part of this path is a file, not a directory; choose another path",
    errno.EISDIR: "this is a directory where a file is expected; give a file path",
    errno.ENOENT: "no such file or directory; check the path (and that its folder exists)",
    errno.ENAMETOOLONG: "file name too long; choose a shorter path",
}
_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def filesystem_message(e: OSError) -> str:
    """One line: the path, the errno's meaning and what to do; for a full disk, the space left there."""
    named = [_final_name(p) for p in (e.filename, e.filename2) if p is not None]
    paths = " -> ".join(_shown(p) for p in named) or "a file being written"
    code = int(e.errno or 0)  # the guard only calls this for the errnos in FILESYSTEM_ERRORS
    text = f"{paths}: {FILESYSTEM_ERRORS[code]} ({errno.errorcode[code]})"
    if e.errno in _SPACE:
        free = _free_bytes(e.filename)
        if free is not None:
            text += f"; {free / (1 << 20):.1f} MB free there"
    return text


def _final_name(path: object) -> object:
    """The file the user asked for, not the `.<name>.tmp` that atomic writes go through first."""
    if isinstance(path, str):
        head, _, name = path.rpartition("/")
        if name.startswith(".") and name.endswith(".tmp") and len(name) > 5:
            return f"{head}/{name[1:-4]}" if head else name[1:-4]
    return path


def _shown(path: object) -> str:
    """A path as the user typed it; undecodable bytes (surrogate escapes) shown as \\xNN, not as a crash."""
    if isinstance(path, bytes):
        return repr(path)[2:-1]
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _free_bytes(path: object) -> int | None:
    """Free space on the filesystem of `path`'s nearest existing folder (the current one when unknown)."""
    here = Path(os.fsdecode(path)) if isinstance(path, str | bytes) else Path.cwd()
    for folder in (here, *here.parents):
        if folder.is_dir():
            return shutil.disk_usage(folder).free
    return None


def _surrogates(e: UnicodeEncodeError) -> bool:
    """Python keeps undecodable bytes of a file name as lone surrogates; they cannot be written as UTF-8."""
    return isinstance(e.object, str) and any(0xDC80 <= ord(c) <= 0xDCFF for c in e.object[e.start : e.end])


def encoding_message(e: UnicodeEncodeError) -> str:
    return (
        f"the name {_shown(e.object)} is not valid UTF-8 (a file or folder name in another encoding), which "
        "the cache and run files cannot record; rename it or choose a UTF-8 path"
    )
