"""`pcmpipe index --kind ivf|ivfpq` from the command line, then `pcmpipe search --gallery <index>`, against the
flat index's answers on a planted gallery: each query's ten near-duplicates hidden among clustered rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import pcmpipe
from pcmpipe.cache import ShardWriter
from pcmpipe.cli import app

pytestmark = pytest.mark.usefixtures("one_thread")
PLANTED = 10  # near-duplicates per query


def _planted_gallery(
    run, out: Path, rows: int = 4000, dtype: str = "float16", meta: dict | None = None
) -> dict[str, set[str]]:
    """An embeddings cache (`pcmpipe embed`'s format) of `rows` clustered vectors plus, for each of the run's
    stored T test rows, PLANTED copies of its embedding with a little noise -> query id -> planted ids."""
    rng = np.random.default_rng(0)
    t_ids, t_emb = run.gallery("T")
    centres = rng.standard_normal((40, run.dim))
    background = centres[rng.integers(0, 40, rows)] + 0.4 * rng.standard_normal((rows, run.dim))
    ids, vecs, planted = [f"bg{i}" for i in range(rows)], [background], {}
    for tid, q in zip(t_ids, t_emb):
        near = [f"near-{tid}-{j}" for j in range(PLANTED)]
        ids += near
        vecs.append(q + 0.02 * rng.standard_normal((PLANTED, run.dim)))
        planted[str(tid)] = set(near)
    emb = np.concatenate(vecs).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    order = rng.permutation(len(ids))  # planted rows spread through the gallery (and its blocks)
    # what `pcmpipe embed` records: searched as the run's I rows (the gallery check compares these)
    meta = {"run": run.path.name, "run_fingerprint": run.fingerprint, "modality": "I"} if meta is None else meta
    writer = ShardWriter(out, features={"embedding": ((run.dim,), dtype)}, key="id", links=[], meta=meta)
    with writer as w:
        w.add([ids[i] for i in order], {}, {"embedding": emb[order].astype(dtype)})
    return planted


def _search(runner, run_dir: Path, index: Path, qid: str) -> list[str]:
    cmd = ["search", str(run_dir), "--query-id", qid, "--from", "T", "--to", "I", "-k", str(PLANTED)]
    r = runner.invoke(app, [*cmd, "--gallery", str(index), "--json"])
    assert r.exit_code == 0, r.output
    return [h["id"] for h in json.loads(r.output)]


@pytest.mark.slow  # trains IVF and PQ indexes
def test_ivf_and_pq_indexes_from_the_cli_find_what_flat_finds(trained, tmp_path):
    runner, run_dir = CliRunner(), trained["run"]
    run = pcmpipe.load_run(run_dir)
    planted = _planted_gallery(run, tmp_path / "emb")
    built = {}
    for kind, extra in (("flat", []), ("ivf", ["--nlist", "32", "--nprobe", "4"]), ("ivfpq", ["--nlist", "32"])):
        out = tmp_path / f"{kind}.index"
        r = runner.invoke(app, ["index", str(tmp_path / "emb"), "--kind", kind, "--out", str(out), *extra])
        assert r.exit_code == 0 and f"({kind})" in r.output, r.output
        built[kind] = json.loads((out / "index.json").read_text())
        assert built[kind]["kind"] == kind and built[kind]["rows"] == 4000 + PLANTED * len(planted)
    assert built["flat"]["dtype"] == "float16" and built["ivf"]["nlist"] == 32 and built["ivf"]["nprobe"] == 4
    recall = {"ivf": [], "ivfpq": []}
    for qid, near in planted.items():
        flat = _search(runner, run_dir, tmp_path / "flat.index", qid)
        assert set(flat) == near  # exact search returns exactly the planted rows
        for kind in recall:
            got = _search(runner, run_dir, tmp_path / f"{kind}.index", qid)
            recall[kind].append(len(set(got) & set(flat)) / PLANTED)
    assert np.mean(recall["ivf"]) >= 0.95, recall
    assert np.mean(recall["ivfpq"]) >= 0.9, recall
    # the index folder is what `--gallery` names; a cache of features is refused with a one-line error
    r = runner.invoke(app, ["index", str(trained["cache"] / "flickr8k" / "I" / "test")])
    assert r.exit_code == 2 and "holds features, not embeddings" in r.output
