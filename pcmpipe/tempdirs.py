"""Hidden working directories named after the process that owns them, so a later run can remove a dead one's.

A step that builds something whole before moving it into place (an import, an unpacked archive) works in
`.<prefix>-<pid>-<random>` beside the destination, on the same filesystem. A SIGKILL leaves that directory
behind; the next run removes those whose process is gone and never touches a live one's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def make(parent: Path, prefix: str) -> Path:
    """A new `.<prefix>-<pid>-<random>` directory in `parent` (created with its parents)."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{prefix}-{os.getpid()}-", dir=parent))


def dead(parent: Path, prefix: str) -> list[Path]:
    """The `make(parent, prefix)` directories whose process no longer exists."""
    found = []
    for d in sorted(parent.glob(f".{prefix}-*-*")):
        try:
            pid = int(d.name[len(prefix) + 2 :].split("-")[0])
            os.kill(pid, 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            found.append(d)
        except (ValueError, PermissionError):  # not our naming, or another user's live process
            continue
    return found


def remove_dead(parent: Path, prefix: str) -> list[Path]:
    """Delete the directories of `dead(parent, prefix)`; returns them."""
    gone = dead(parent, prefix)
    for d in gone:
        shutil.rmtree(d, ignore_errors=True)
    return gone
