"""Using a trained run: load it, embed new data with it, search it, export it (docs/using.md).

    run = load_run("cache/runs/<name>")                 # a run directory or an exported folder
    run.embed("T", ["a dog on a beach"])                 # -> np.ndarray [1, dim], L2-normalised
    run.search("a dog on a beach", from_="T", to="I", k=10)   # -> [(id, score), ...]

Modules: `loaded` (Run, load_run: heads, backbones, galleries), `inputs` (raw inputs -> backbone features),
`embed` (embeddings written as a cache), `export` (a Hub-style folder).
"""

from pcmpipe.runs.loaded import Run, load_run

__all__ = ["Run", "load_run"]
