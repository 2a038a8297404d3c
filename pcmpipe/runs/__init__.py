"""Using a trained run: load it, embed new data with it, search it, export it (docs/using.md).

    run = load_run("cache/runs/<name>")                 # a run directory or an exported folder
    run.embed("T", ["a dog on a beach"])                 # -> np.ndarray [1, dim], L2-normalised
    run.search("a dog on a beach", from_="T", to="I", k=10)   # -> [(id, score), ...]

Modules: `loaded` (Run, load_run: heads, backbones), `gallery` (what a run searches, checked), `inputs` (raw
inputs -> backbone features), `embed` (embeddings written as a cache), `export` (a Hub-style folder), `outdir`
(where those two write), `payload` (a result's caption or media file), `rows` (a row by id in any split).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Run", "load_run"]

if TYPE_CHECKING:
    from pcmpipe.runs.loaded import Run, load_run


def __getattr__(name: str) -> Any:
    # Imported on first use: the CLI checks its arguments through pcmpipe.runs.outdir before torch loads, and
    # `pcmpipe.runs.gallery` (a search from a stored row) must not pull in the backbones
    # that `loaded` imports (open_clip, transformers: seconds of start-up).
    if name in __all__:
        from pcmpipe.runs import loaded

        return getattr(loaded, name)
    raise AttributeError(f"module 'pcmpipe.runs' has no attribute {name!r}")
