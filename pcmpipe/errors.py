"""The one exception type for errors a user can cause.

The CLI turns a `UserError` into one red line and exit code 2; anything else is a bug and keeps its
traceback. Raise it for bad flags, missing or corrupt inputs, mismatched caches, diverging training.
"""

from __future__ import annotations

from typing import Literal


class UserError(Exception):
    """An error caused by input the user controls (flags, files, caches). Message: one line, actionable."""


# Exception types other libraries raise on a damaged, crafted or unwritable file: (module, attribute path). Looked
# up only in modules already imported (a library that was never imported cannot have raised), so this module
# stays free of heavy imports. FAISS raises RuntimeError (its C++ exceptions through SWIG), as does torch.
_FOREIGN = (
    ("safetensors", "SafetensorError"),
    ("pyarrow", "ArrowException"),
    ("tarfile", "TarError"),
    ("zlib", "error"),
    ("struct", "error"),
    ("PIL", "UnidentifiedImageError"),
    ("soundfile", "LibsndfileError"),
)


_DONE = {"read": "read", "write": "written"}


def _foreign_types() -> tuple[type[BaseException], ...]:
    import sys

    found: list[type[BaseException]] = [RuntimeError, EOFError, RecursionError, MemoryError]
    for module, name in _FOREIGN:
        if module in sys.modules and isinstance(getattr(sys.modules[module], name, None), type):
            found.append(getattr(sys.modules[module], name))
    return tuple(found)


class file_errors:  # noqa: N801 (used as a context manager, like contextlib's lower-case helpers)
    """Around one read or write of a file the user named: another library's error about that file becomes one
    `UserError` line naming it. A filesystem error without a file name gets the name, so the CLI guard can
    say which file (and how much room is left when the disk is full).

        with file_errors(path, "read", "index file"):
            index = faiss.read_index(str(path))

    Keep the block to the foreign call: everything raised inside it is blamed on the file.
    """

    def __init__(self, path: object, action: str = "read", what: str = "file", hint: str = "") -> None:
        self.path, self.action, self.what, self.hint = path, action, what, hint

    def __enter__(self) -> file_errors:
        return self

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None, tb: object) -> Literal[False]:
        if e is None or isinstance(e, UserError | KeyboardInterrupt):
            return False
        if isinstance(e, OSError) and e.errno is not None:
            if e.filename is None:  # name the file for the CLI guard's filesystem message
                raise OSError(e.errno, e.strerror, str(self.path)) from None
            return False
        if isinstance(e, (OSError, *_foreign_types())):
            detail = _detail(e)
            if code := _os_error_code(detail):  # a full disk or a file-size limit, in another library's words
                import os

                raise OSError(code, os.strerror(code), str(self.path)) from None
            hint = f"; {self.hint}" if self.hint else ""
            done = _DONE.get(self.action, self.action)
            raise UserError(f"{self.what} {self.path} cannot be {done} ({type(e).__name__}: {detail}){hint}") from None
        return False


def _os_error_code(detail: str) -> int | None:
    """The errno a foreign error reports for a full disk or a file-size limit: FAISS's C library words, or a
    Rust I/O error's '(os error 27)' (safetensors: 'I/O error: File too large (os error 27)')."""
    import errno
    import re

    if "No space left" in detail or "Disk quota" in detail:
        return errno.ENOSPC
    found = re.search(r"\(os error (\d+)\)", detail)
    if found and int(found.group(1)) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return int(found.group(1))
    return None


def _detail(e: BaseException) -> str:
    """The first line of a foreign error, without FAISS's 'Error in <C++ signature> at <file>:<line>: ' prefix."""
    import re

    line = (str(e).strip().splitlines() or [""])[0]
    return re.sub(r"^Error in .*? at \S+:\d+: ", "", line)[:160]
