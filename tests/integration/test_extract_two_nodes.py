"""Extraction from a dataset that streams its records by shard, launched as two torchrun nodes on one machine
(`--nnodes 2 --node-rank 0|1`, c10d rendezvous on 127.0.0.1, gloo): each node reads only its own shards, never
a listing, and the merged cache equals the one a single process writes from the listing: every shard byte for
byte (extraction's blocks are fixed by global position, so both batch every record alike)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from extraction import extract

from pcmpipe.cache import cache_dir, open_cache
from pcmpipe.cache.layout import ERRORS
from pcmpipe.cache.manifest import MANIFEST, load_manifest

TINY = {"image": "clip-tiny-image", "text": "clip-tiny-text", "audio": "hubert-tiny"}
RANDOM = {"image": "random:0", "text": "random:0", "audio": "random:0"}
MODALITIES = ("I", "T", "S")

# A Flickr8k reader that offers its records only by shard (3 records each), as a webdataset or a table of
# paths in many files would, and refuses to list them; each process notes the shards it read.
SCRIPT = textwrap.dedent(
    """
    import os, sys
    from pcmpipe.datasets import DATASETS, Flickr8k
    from pcmpipe.config import ExtractConfig
    from pcmpipe.extract import extract

    root, out, log = sys.argv[1:4]

    class Shard:
        def __init__(self, name, load):
            self.name, self.rows, self._load = name, None, load

        def records(self):  # a shard read to its end is noted (every rank peeks at the first record)
            yield from self._load()
            with open(log + "." + os.environ["RANK"], "a") as f:
                f.write(self.name + "\\n")

    class ShardedFlickr8k(Flickr8k):
        def record_shards(self, modality, split):
            n = len(Flickr8k.records(self, modality, split))
            load = lambda i: lambda: iter(Flickr8k.records(self, modality, split)[i : i + 3])
            return [Shard(f"{modality}-{split}-{i:03d}", load(i)) for i in range(0, n, 3)]

        def records(self, modality, split):
            raise AssertionError("a streamed dataset is never listed")

    DATASETS["flickr8k-sharded"] = ShardedFlickr8k
    backbones = {"image": "clip-tiny-image", "text": "clip-tiny-text", "audio": "hubert-tiny"}
    extract(ExtractConfig.from_dict(dict(dataset="flickr8k-sharded", root=root, modalities=["I", "T", "S"],
            splits=["train"], backbones=backbones, weights={k: "random:0" for k in backbones}, cache_root=out,
            workers=0, batch_size=2, rows_per_shard=3)))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two torchrun launches: about 50 s idle, 150 s on 2 shared cores
@pytest.mark.usefixtures("one_thread")
def test_two_nodes_streaming_shards_write_the_single_process_cache(synth_dataset, tmp_path: Path) -> None:
    root, single, multi = synth_dataset("flickr8k", images=6, seed=5), tmp_path / "single", tmp_path / "multi"
    extract("flickr8k", root, modalities=list(MODALITIES), splits=["train"], backbones=TINY, weights=RANDOM,
            cache_root=single, workers=0, batch_size=2, rows_per_shard=3)  # fmt: skip
    script = tmp_path / "extract_sharded.py"
    script.write_text(SCRIPT)
    log = tmp_path / "read"
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--node-rank",
                str(rank),
                "--nproc-per-node",
                "1",
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                f"127.0.0.1:{port}",
                "--rdzv-id",
                "two-nodes",
                str(script),
                str(root),
                str(multi),
                str(log),
            ],  # fmt: skip
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(o[-3000:] for o in outputs)

    read = [set(Path(f"{log}.{r}").read_text().split()) for r in (0, 1)]
    assert read[0] and read[1] and not read[0] & read[1]  # each node read its own shards, none twice
    assert len(read[0] | read[1]) == 2 + 7 + 7  # 4 train images, 20 captions, 3 records a shard: every shard
    for m in MODALITIES:
        directory = cache_dir(multi, "flickr8k", m, "train")
        assert {p.name[:9] for p in directory.glob("part-*")} == {"part-r000", "part-r001"}
        want_dir = cache_dir(single, "flickr8k", m, "train")
        want, got = load_manifest(want_dir / MANIFEST), load_manifest(directory / MANIFEST)
        # block k of 3 rows by global position is shard k of one process and shard k // 2 of rank k % 2:
        # the same rows, batched alike, so the same bytes
        blocks = want["shards"]
        assert len(blocks) == len(got["shards"]) and [s["rows"] for s in blocks[:-1]] == [3] * (len(blocks) - 1)
        by_file = {s["file"]: s for s in got["shards"]}
        for k, shard in enumerate(blocks):
            twin = by_file[f"part-r{k % 2:03d}-{k // 2:05d}.parquet"]
            assert (directory / twin["file"]).read_bytes() == (want_dir / shard["file"]).read_bytes()
            assert {**twin, "file": shard["file"]} == shard
        # the manifests differ only in what must differ: shard file names (and so their listed order), the
        # listing digest (of the records here, of the shards' names and sizes for the streamed dataset, which
        # is never listed), the per-process expected_rows (unknown after a merge) and the errors file, listed by
        # one process only (ranks write their parts of it; rank 0 joins them after the merge)
        differ = {"shards", "listing", "expected_rows", "side_files"}
        assert {k: v for k, v in got.items() if k not in differ} == {k: v for k, v in want.items() if k not in differ}
        assert got["expected_rows"] is None and want["expected_rows"] == want["num_rows"]
        assert [f["file"] for f in want["side_files"]] == [ERRORS] and "side_files" not in got
        assert (directory / ERRORS).read_bytes() == (want_dir / ERRORS).read_bytes()
        (wc, wf), (gc, gf) = open_cache(want_dir).read(), open_cache(directory).read()
        for column in wc:  # and the caches read alike, row for row (shards in block order on both sides)
            assert sorted(gc[column].tolist()) == sorted(wc[column].tolist())
        assert np.array_equal(np.sort(gf["features"].ravel()), np.sort(wf["features"].ravel()))
