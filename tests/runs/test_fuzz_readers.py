"""Property-based fuzzing of every reader of a file pcmpipe writes or reads back.

Real files are made once (a tiny extracted cache in Parquet and HDF5, a trained run with its embeddings, an
interrupted run's checkpoint, an embed output and its index, an export, a dataset.yaml over a CSV and over
webdataset shards, a settings YAML, a pipeline). Each example copies the folder of one file, damages the file
(tests/fuzz_mutations.py: bit flips, truncation, insertion, deletion; for JSON, JSON lines, YAML and safetensors
headers also types swapped, keys dropped or added, 10^5-deep nesting) and calls the public reader. The reader
must raise a pcmpipe `UserError` whose message is one line, or return; where the file carries a checksum (cache
shards, heads, embeddings, checkpoints, index files), what it returns must equal what the undamaged file gave.
Any other exception fails the test.

CI runs `EXAMPLES` examples per file kind, the same ones every time (derandomized, no shrinking), in about a
minute. `PCMPIPE_FUZZ_EXAMPLES=N` runs N random examples per kind and shrinks what fails (docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fuzz_mutations import apply, mutations, nodes
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

import pcmpipe
from pcmpipe.cache import open_cache
from pcmpipe.errors import UserError

EXAMPLES = 150
LONG = int(os.environ.get("PCMPIPE_FUZZ_EXAMPLES", "0"))
settings.register_profile(
    "pcmpipe-fuzz-ci",
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
settings.register_profile(
    "pcmpipe-fuzz-long",
    max_examples=max(LONG, 1),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
PROFILE = settings.get_profile("pcmpipe-fuzz-long" if LONG else "pcmpipe-fuzz-ci")
# what a reader may allocate beyond what the process maps when the examples start: a damaged header that asks
# for gigabytes fails as MemoryError here (a finding) instead of taking the shared machine's memory
MEMORY_HEADROOM = 3 << 30

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class Kind:
    """One file kind: `file` inside the copied `folder` (both relative to the pristine root), the reader that
    turns the copied folder into a comparable value, and whether that value must survive damage unchanged."""

    folder: str
    file: str
    read: Callable[[Path], Any]
    fmt: str | None  # json | jsonl | yaml | safetensors: structure mutations too; None: bytes only
    exact: bool = False
    # damage that once broke the reader (or still does), as mutations of the pristine bytes: tried first in every
    # run, so that a regression shows at once and a strict xfail fails (or passes, once fixed) every time
    known: Callable[[bytes], list[list[tuple]]] | None = None


def _cache(folder: Path) -> Any:
    cols, feats = open_cache(folder).read()
    return {k: np.asarray(v).tolist() for k, v in cols.items()}, {k: v.tobytes() for k, v in feats.items()}


def _run(folder: Path) -> Any:
    run = pcmpipe.load_run(folder)
    return run.fingerprint, sorted(run.shapes.items())


def _run_files(folder: Path) -> Any:
    """The readers of a run's JSON files: load_run, the report's tolerant reader and the planner's check."""
    from pcmpipe.report.results import read_results
    from pcmpipe.training import rundir

    result = read_results(folder)
    if result is not None:
        [result.metric(d, "r@1", source=s) for d in ("I->T", "T->I") for s in ("test", "untrained", "chance")]
    rundir.result_ok(folder)
    rundir.read_metrics(folder)
    return _run(folder)


def _heads(folder: Path) -> Any:
    from pcmpipe.training.rundir import load_heads

    heads, scale = load_heads(folder)
    return scale, {k: v.numpy().tobytes() for k, v in heads.state_dict().items()}


def _embeddings(folder: Path) -> Any:
    from pcmpipe.training.rundir import load_embeddings

    return {m: (e.embedding.numpy().tobytes(), e.key, {k: v.tolist() for k, v in e.columns.items()})
            for m, e in load_embeddings(folder).items()}  # fmt: skip


def _checkpoint(folder: Path) -> Any:
    from pcmpipe.training.state import load_checkpoint

    ckpt = load_checkpoint(folder)
    assert ckpt is not None
    return ckpt.fingerprint, ckpt.meta, {k: v.numpy().tobytes() for k, v in ckpt.tensors.items()}


def _index(folder: Path) -> Any:
    from pcmpipe.index import open_index

    index = open_index(folder)
    ids, scores = index.search(np.eye(4, 32, dtype=np.float32), 3)
    return ids.tolist(), np.round(scores, 5).tolist()


def _dataset(folder: Path) -> Any:
    from pcmpipe.datasets import open_dataset

    ds = open_dataset("mine", folder)
    return {m: [(r.id, r.links, r.text) for s in ("train", "val", "test") for r in ds.records(m, s)]
            for m in ds.modalities}  # fmt: skip


def _settings(folder: Path) -> Any:
    from pcmpipe.config import load_config

    return load_config(folder / "train.yaml").model_dump()


def _pipeline(folder: Path) -> Any:
    from pcmpipe.pipelines.spec import load_pipeline

    return load_pipeline(folder / "p.yaml", cache_root=str(folder / "cache")).name


def _flip_after(marker: bytes) -> Callable[[bytes], list[list[tuple]]]:
    """A flip of the lowest bit of the byte after `marker` (a digit: 6 -> 7)."""
    return lambda data: [[("flip", data.index(marker) + len(marker), 0)]]


def _at(path: tuple, op: str, *args: Any) -> Callable[[bytes], list[tuple]]:
    """Mutation `op` of the JSON node at `path` (keys and indexes from the root)."""

    def mutation(data: bytes) -> list[tuple]:
        doc = json.loads(data)
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        index = next(i for i, (p, k) in enumerate(nodes(doc)) if p is parent and k == path[-1])
        return [(op, index, *args)]

    return mutation


def _each(*made: Callable[[bytes], list[tuple]]) -> Callable[[bytes], list[list[tuple]]]:
    return lambda data: [m(data) for m in made]


def _unsigned_flip(data: bytes) -> list[list[tuple]]:
    """Drop the header's first key (its __metadata__, where the sha256 is), then flip a bit of the last value."""
    dropped = apply(data, [("drop", 1)], "safetensors")
    return [[("drop", 1), ("flip", len(dropped) - 4, 0)]]


def _whole(*muts: tuple) -> Callable[[bytes], list[list[tuple]]]:
    return lambda _: [list(muts)]


KINDS = {
    # a key column its shards lack (was pyarrow's KeyError); a feature's shape [32] cut to [] (reads other values)
    "cache-manifest": Kind(
        "cache/flickr8k/T/test",
        ".manifest.json",
        _cache,
        "json",
        True,
        _each(_at(("key",), "swap", "𣛝"), _at(("features", "features", "shape", 0), "drop")),
    ),  # fmt: skip
    "parquet-shard": Kind("cache/flickr8k/T/test", "part-00000.parquet", _cache, None, exact=True),
    "hdf5-shard": Kind("h5", "part-00000.h5", _cache, None, exact=True),
    "run-config": Kind("cache/runs/walk", "config.json", _run_files, "json", known=_whole(("swap", 0, []))),
    "metrics-jsonl": Kind("cache/runs/walk", "metrics.jsonl", _run_files, "jsonl"),
    "test-metrics": Kind("cache/runs/walk", "test_metrics.json", _run_files, "json"),
    "heads": Kind("cache/runs/walk", "heads.safetensors", _heads, "safetensors", exact=True),
    "embeddings-json": Kind("cache/runs/walk", "embeddings/T.json", _embeddings, "json"),
    "embeddings-safetensors": Kind(
        "cache/runs/walk", "embeddings/T.safetensors", _embeddings, "safetensors", True, _unsigned_flip
    ),
    "checkpoint": Kind(
        "runs/.tmp-part", "checkpoint.safetensors", _checkpoint, "safetensors", True, _flip_after(b'best\\": ')
    ),
    "index-meta": Kind("index", "index.json", _index, "json", known=_whole(("swap", 0, None))),
    "index-ids": Kind("index", "ids.json", _index, "json", exact=True, known=_whole(("swap", 1, "im0#9"))),
    # the flat index file ends in its 10 x 32 float32 rows: bit 6 of the first one's high byte is in its exponent
    "index-faiss": Kind("index", "index.faiss", _index, None, True, lambda data: [[("flip", len(data) - 1277, 6)]]),
    "export-config": Kind("export", "config.json", _run, "json", known=_whole(("swap", 0, []))),
    "dataset-yaml": Kind("table", "dataset.yaml", _dataset, "yaml"),
    "webdataset-tar": Kind("shards", "train-000.tar", _dataset, None),
    "settings-yaml": Kind("settings", "train.yaml", _settings, "yaml"),
    "pipeline": Kind("settings", "p.yaml", _pipeline, "yaml"),
}
# readers whose known defect another change has to fix: xfail(strict) so that the lead flips each once it has landed
XFAIL: dict[str, str] = {}


@pytest.fixture(scope="module")
def pristine(trained, tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    """The files (built by pcmpipe itself) and what each kind's reader gives for them, undamaged."""
    from pristine_files import build_pristine

    root = tmp_path_factory.mktemp("fuzz")
    build_pristine(trained, root)
    return root, {name: kind.read(root / kind.folder) for name, kind in KINDS.items()}


@pytest.fixture(scope="module")
def memory_ceiling(pristine):
    """The examples run under RLIMIT_AS = what the process maps now + MEMORY_HEADROOM (the soft limit only:
    it is raised back afterwards)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    mapped = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmSize")
    )
    ceiling = mapped + MEMORY_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (ceiling if hard == resource.RLIM_INFINITY else min(ceiling, hard), hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _params() -> list:
    return [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=XFAIL[n])) if n in XFAIL else n for n in KINDS]


@pytest.mark.slow  # 150 examples per file kind: about 2 CPU minutes in all
@pytest.mark.parametrize("name", _params())
def test_a_damaged_file_is_one_line_or_reads_as_before(pristine, memory_ceiling, name):
    root, expected = pristine
    kind = KINDS[name]

    def check(muts: list[tuple], salt: str) -> None:
        with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
            folder = Path(tmp) / "f"
            shutil.copytree(root / kind.folder, folder, symlinks=True)
            target = folder / kind.file
            target.write_bytes(apply(target.read_bytes(), muts, kind.fmt))
            try:
                got = kind.read(folder)
            except UserError as e:
                assert str(e).strip() and "\n" not in str(e).strip(), repr(str(e))
                event("one line")
                return
            event("read")
            if kind.exact:
                assert got == expected[name], f"{kind.file} read back other data after {muts}"

    for muts in kind.known((root / kind.folder / kind.file).read_bytes()) if kind.known else []:
        check = example(muts=muts, salt=name)(check)
    PROFILE(given(muts=mutations(kind.fmt), salt=st.just(name))(check))()


def test_the_pristine_files_read(pristine):
    """Each reader reads its undamaged file (else the fuzzing above would only test error paths)."""
    root, expected = pristine
    assert set(expected) == set(KINDS)
    assert len(expected["parquet-shard"][0]["id"]) == 10 and expected["hdf5-shard"][0] == expected["cache-manifest"][0]
    assert expected["checkpoint"][1] and expected["heads"][1] and expected["index-ids"][0][0]
    assert sorted(expected["webdataset-tar"]) == ["A", "I", "T"] == sorted(expected["dataset-yaml"])
    assert tarfile.is_tarfile(root / "shards" / "train-000.tar") and torch.get_num_threads() == 1
