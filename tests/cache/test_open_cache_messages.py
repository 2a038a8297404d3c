"""`open_cache` on a folder that holds no cache says what the folder is and what to do, without assuming the
caller is extraction (`index emb/T`, `index cache/runs/X`, `search --gallery emb/nope.index` all used to say
"run the extraction first")."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pcmpipe.cache import open_cache
from pcmpipe.cache.manifest import rank_manifest_name
from pcmpipe.errors import UserError

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "v1" / "cache"
POINT = "point at a cache folder, <cache-root>/<dataset>/<modality>/<split>"
MAKE = "create it with `pcmpipe extract` (or `pcmpipe import-features` for your own vectors)"


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Path:
    """A copy of the v1 cache (with its run), an index folder written by pcmpipe.index, a file, an empty folder."""
    from pcmpipe.index import build_index, save_index

    root = tmp_path_factory.mktemp("place")
    shutil.copytree(GOLDEN, root / "cache")
    vectors = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    save_index(root / "emb" / "T.index", build_index(vectors, "flat"), [str(i) for i in range(4)], {"kind": "flat"})
    (root / "afile").write_text("not a folder")
    (root / "empty").mkdir()
    ranks = root / "ranks"
    ranks.mkdir()
    shutil.copy(GOLDEN / "synth" / "I" / "val" / "manifest.json", ranks / rank_manifest_name(0))
    return root


CASES = {
    "missing": ("emb/T", "the folder does not exist", MAKE),
    "a file": ("afile", "it is a file, not a folder", POINT),
    "a run": ("cache/runs/golden", "it is a training run (or an exported one), not a cache", POINT),
    "an index folder": ("emb/T.index", "it is an index folder (`pcmpipe index` writes one), not a cache", POINT),
    "a cache root": ("cache", "it is a folder holding caches (synth/I/test, synth/I/train, synth/I/val, ...)", ""),
    "a modality folder": ("cache/synth/T", "it is a folder holding caches (test, train, val)", "name one of them"),
    "the runs folder": ("cache/runs", "it is the runs folder beside a cache", POINT),
    "an empty folder": ("empty", "it holds no .manifest.json", MAKE),
    "rank manifests": ("ranks", "it has per-rank manifests only", "merge them first"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_folder_without_a_cache_is_named_for_what_it_is(place, case):
    where, found, advice = CASES[case]
    with pytest.raises(UserError) as err:
        open_cache(place / where)
    msg = str(err.value)
    assert msg.startswith(f"no cache at {place / where}: {found}"), msg
    assert advice in msg and "\n" not in msg and "run the extraction first" not in msg


def test_a_caller_names_what_it_expected_and_how_to_make_it(place):
    make = "make it with `pcmpipe embed RUN ... --out DIR`"
    for where, found in [("emb/nope.index", "the folder does not exist"), ("cache/runs/golden", "a training run")]:
        with pytest.raises(UserError) as err:
            open_cache(place / where, what="embeddings cache", make=make)
        msg = str(err.value)
        assert msg.startswith(f"no embeddings cache at {place / where}: ") and found in msg and msg.endswith(make)
