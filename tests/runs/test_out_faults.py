"""`embed` and `export` under SIGKILL, a full disk and a second job: the rerun always finishes (never "delete
it"), the output is never half of one result or a mix of two, and no temp folder is left behind.

The kills land at every durable step of the command in turn (tests/kill_points.py); the full disk is
RLIMIT_FSIZE in a real subprocess (Python ignores SIGXFSZ, so the write fails with EFBIG, which the CLI guard
treats as it treats ENOSPC: tests/cli/test_bad_input.py::test_a_full_disk_is_one_line_saying_how_much_is_free).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kill_points import KillPoints

import pcmpipe
from pcmpipe.cache import open_cache
from pcmpipe.training import rundir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def forker(tmp_path_factory):
    killer = KillPoints(tmp_path_factory.mktemp("forker"))
    yield killer
    killer.close()


def _embedded(out: Path) -> tuple[list[str], np.ndarray]:
    cols, feats = open_cache(out).read(["embedding"])  # every shard's sha256 checked
    return list(cols["id"]), feats["embedding"]


def _hidden(folder: Path) -> list[str]:
    """Leftovers of a job: temp and set-aside folders (lock files stay by design: cache/lock.py)."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith("-tmp"))


def test_embed_killed_at_each_durable_step_resumes_to_the_same_embeddings(trained, tmp_path, forker):
    images = trained["data"] / "Flicker8k_Dataset"  # 12 images: 3 shards of 4
    argv = ["embed", trained["run"], images, "--modality", "I", "--workers", "0", "--batch-size", "2"]
    argv += ["--rows-per-shard", "4"]
    code, said, steps = forker.run([*argv, "--out", tmp_path / "ref"])
    assert code == 0 and "wrote 12 I embeddings" in said, said
    want = _embedded(tmp_path / "ref")
    assert steps >= 9  # the lock record, 3 shards and their manifests, the final manifest, the swap
    for n in range(1, steps + 1):
        out = tmp_path / f"k{n}"
        code, said, _ = forker.run([*argv, "--out", out], kill_at=n)
        assert code is None, said
        assert not out.exists() or not any(out.iterdir()), f"kill {n} left a partial {out}"
        code, said, _ = forker.run([*argv, "--out", out])
        assert code == 0 and "wrote 12 I embeddings" in said and "delete" not in said, (n, said)
        ids, emb = _embedded(out)
        assert ids == want[0], n
        np.testing.assert_allclose(emb, want[1], atol=1e-6)
    assert _hidden(tmp_path) == []


def _embed_args(run: Path, texts: Path, out: Path) -> list:
    args = ["embed", run, "--modality", "T", "--text-file", texts, "--out", out]
    return [*args, "--batch-size", "1", "--rows-per-shard", "8"]


def test_two_embeds_into_one_out_never_mix(trained, tmp_path, forker):
    """Same inputs: one writes, the other waits for it and finds them (exit 0). Other inputs: one writes, the
    other refuses in one line. Either way the folder holds exactly one job's embeddings."""
    run = pcmpipe.load_run(trained["run"])
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("".join(f"a dog number {i}\n" for i in range(48)))
    second.write_text("".join(f"a cat number {i}\n" for i in range(48)))
    same = forker.together([_embed_args(trained["run"], first, tmp_path / "same") for _ in "ab"])
    outs = sorted(said.strip().splitlines()[-1] for _, said, _ in same)
    assert [c for c, _, _ in same] == [0, 0], same
    assert outs[0].startswith(f"{tmp_path / 'same'} already holds these 48") and outs[1].startswith("wrote 48"), outs
    _, emb = _embedded(tmp_path / "same")
    np.testing.assert_allclose(emb, run.embed("T", first.read_text().splitlines()), atol=1e-5)
    both = forker.together([_embed_args(trained["run"], texts, tmp_path / "mix") for texts in (first, second)])
    assert sorted(c for c, _, _ in both) == [0, 2], both
    loser = [ln for ln in next(said for c, said, _ in both if c == 2).splitlines() if "error" in ln]
    assert len(loser) == 1 and "holds embeddings of other inputs" in loser[0], both
    winner = first if both[0][0] == 0 else second
    got = _embedded(tmp_path / "mix")[1]
    np.testing.assert_allclose(got, run.embed("T", winner.read_text().splitlines()), atol=1e-5)
    assert _hidden(tmp_path) == []


def test_export_killed_at_each_durable_step_finishes_on_rerun(trained, tmp_path, forker):
    code, said, steps = forker.run(["export", trained["run"], tmp_path / "ref"])
    assert code == 0, said
    assert steps >= 8  # the lock record, heads, 4 embedding files, 3 JSON/Markdown files, the swap
    for n in range(1, steps + 1):
        out = tmp_path / f"k{n}"
        code, said, _ = forker.run(["export", trained["run"], out], kill_at=n)
        assert code is None, said
        assert not out.exists(), f"kill {n} left a partial {out}"
        code, said, _ = forker.run(["export", trained["run"], out])
        assert code == 0 and said.startswith(f"exported {trained['run'].name}"), (n, said)
        assert sorted(p.name for p in out.rglob("*")) == sorted(p.name for p in (tmp_path / "ref").rglob("*"))
        back = pcmpipe.load_run(out)
        assert back.fingerprint == pcmpipe.load_run(trained["run"]).fingerprint
        assert set(rundir.load_embeddings(out)) == {"I", "T"}
    code, said, _ = forker.run(["export", trained["run"], tmp_path / "ref"])
    assert code == 0 and "already holds this export" in said, said
    assert _hidden(tmp_path) == []


def test_export_on_a_full_disk_is_one_line_and_the_rerun_finishes(trained, tmp_path, forker):
    out = tmp_path / "exp"
    limit = (trained["run"] / "heads.safetensors").stat().st_size // 2  # room for everything but the heads
    code, said, _ = forker.run(["export", trained["run"], out], fsize=limit)
    lines = said.strip().splitlines()
    assert code == 2 and len(lines) == 1, said
    assert lines[0].startswith(f"error: {out / 'heads.safetensors'}: file too large") and "(EFBIG)" in lines[0]
    assert not out.exists() and _hidden(tmp_path) == []  # no partial heads.safetensors anywhere
    code, said, _ = forker.run(["export", trained["run"], out])
    assert code == 0, said
    assert pcmpipe.load_run(out).fingerprint == pcmpipe.load_run(trained["run"]).fingerprint


def test_embed_on_a_full_disk_names_the_file_and_the_rerun_finishes(trained, tmp_path, forker):
    out = tmp_path / "emb"
    images = trained["data"] / "Flicker8k_Dataset"
    argv = ["embed", trained["run"], images, "--modality", "I", "--workers", "0", "--out", out]
    code, said, _ = forker.run(argv, fsize=2048)  # the first shard is about 3 KB
    lines = [ln for ln in said.strip().splitlines() if not ln.lstrip().startswith("embed I")]
    assert code == 2 and len(lines) == 1, said
    assert lines[0].startswith(f"error: {out / 'part-00000.parquet'}: file too large"), lines[0]
    assert not out.exists()
    code, said, _ = forker.run(argv)
    assert code == 0 and "wrote 12 I embeddings" in said, said
    assert len(_embedded(out)[0]) == 12 and _hidden(tmp_path) == []
