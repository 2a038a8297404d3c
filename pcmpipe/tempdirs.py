"""Hidden working directories named after the process that owns them, so a later run can remove a dead one's.

A step that builds something whole before moving it into place (an import, an unpacked archive) works in
`.<prefix>-<pid>-<random>` beside the destination, on the same filesystem. A SIGKILL leaves that directory
behind; the next run removes those whose process is gone and never touches a live one's.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path


def make(parent: Path, prefix: str) -> Path:
    """A new `.<prefix>-<pid>-<random>` directory in `parent` (created with its parents)."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{prefix}-{os.getpid()}-", dir=parent))


def dead(parent: Path, prefix: str) -> list[Path]:
    """The `make(parent, prefix)` directories whose process no longer exists. Only names `make` gives match (the
    random part has no '.' or '-'), so another prefix's `.<prefix>-1-x.import-2-y` never does."""
    found = []
    named = re.compile(rf"^\.{re.escape(prefix)}-(\d+)-[A-Za-z0-9_]+$")
    for d in sorted(parent.glob(f".{prefix}-*-*")):
        m = named.match(d.name)
        if m is None:  # not our naming
            continue
        try:
            os.kill(int(m.group(1)), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            found.append(d)
        except (PermissionError, OverflowError):  # another user's live process, or no pid at all
            continue
    return found


def remove_dead(parent: Path, prefix: str) -> list[Path]:
    """Delete the directories of `dead(parent, prefix)`; returns them. A symbolic link of that name loses the
    link only: what it points to is never touched."""
    gone = dead(parent, prefix)
    for d in gone:
        if d.is_symlink():
            d.unlink()
        else:
            shutil.rmtree(d, ignore_errors=True)
    return gone
