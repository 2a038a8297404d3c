"""pcmpipe: pairwise cross-modal coordination (PCMC / PCMR) over cached backbone features.

run = pcmpipe.load_run("cache/runs/<name>")     # see pcmpipe.runs and docs/using.md
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pcmpipe.version import __version__

__all__ = ["__version__", "load_run"]

if TYPE_CHECKING:
    from pcmpipe.runs import load_run


def __getattr__(name: str) -> Any:
    # Imported on first use: `import pcmpipe` (and so `pcmpipe --help`) stays free of torch and FAISS.
    if name == "load_run":
        from pcmpipe.runs import load_run

        return load_run
    raise AttributeError(f"module 'pcmpipe' has no attribute {name!r}")
