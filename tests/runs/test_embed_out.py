"""`pcmpipe embed` outputs: the fingerprint covers the inputs (an identical rerun is a note, other inputs are one
line), --out must be a new folder, a --cache must hold the features the head was trained on, sizes are bounded
before any work, a damaged earlier result is rebuilt, and progress is shown."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from extraction import extract
from typer.testing import CliRunner

import pcmpipe
from pcmpipe.cache import open_cache
from pcmpipe.cli import app
from pcmpipe.errors import UserError
from pcmpipe.runs.embed import embed_cache_to_cache, embed_inputs_to_cache

pytestmark = pytest.mark.usefixtures("one_thread")
ENV = {"COLUMNS": "400", "TERM": "dumb", "NO_COLOR": "1"}


def _invoke(*args) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, [str(a) for a in args], env=ENV)
    assert res.exit_code in (0, 2) and "Traceback" not in res.output, (args, res.output, res.exception)
    return res.exit_code, res.stdout, res.stderr


def _one_line(*args) -> str:
    code, _, err = _invoke(*args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (args, err)
    return lines[0]


def _embedded(out: Path) -> tuple[list[str], np.ndarray]:
    cols, feats = open_cache(out).read(["embedding"])
    return list(cols["id"]), feats["embedding"]


def test_an_identical_rerun_is_a_note_and_other_inputs_are_one_line(trained, tmp_path):
    run, out = trained["run"], tmp_path / "t1"
    texts = ["--text", "a dog runs", "--text", "two cats"]
    code, said, _ = _invoke("embed", run, "--modality", "T", *texts, "--out", out)
    assert code == 0 and "wrote 2 T embeddings" in said
    before = _embedded(out)
    shutil.copytree(out, tmp_path / ".t1.embed-tmp")  # an exchanged-out old result a kill left: only waste
    code, said, _ = _invoke("embed", run, "--modality", "T", *texts, "--out", out)
    assert code == 0 and "already holds these 2 T embeddings" in said
    assert not (tmp_path / ".t1.embed-tmp").exists()
    line = _one_line("embed", run, "--modality", "T", "--text", "something else", "--out", out)
    assert "holds embeddings of other inputs" in line and str(out) in line
    ids, emb = _embedded(out)
    assert ids == before[0] and np.array_equal(emb, before[1])  # left as it was
    # files: an edited image (its mtime) makes other inputs too
    images = sorted((trained["data"] / "Flicker8k_Dataset").glob("*.jpg"))[:3]
    copies = tmp_path / "imgs"
    copies.mkdir()
    for p in images:
        (copies / p.name).write_bytes(p.read_bytes())
    assert _invoke("embed", run, copies, "--modality", "I", "--workers", "0", "--out", tmp_path / "i1")[0] == 0
    assert _invoke("embed", run, copies, "--modality", "I", "--workers", "0", "--out", tmp_path / "i1")[0] == 0
    first = copies / images[0].name
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))
    line = _one_line("embed", run, copies, "--modality", "I", "--workers", "0", "--out", tmp_path / "i1")
    assert "holds embeddings of other inputs" in line
    other = _one_line("embed", run, "--modality", "T", *texts, "--out", tmp_path / "i1")
    assert "I embeddings, not T" in other


def test_a_damaged_earlier_result_is_rebuilt(trained, tmp_path):
    run = pcmpipe.load_run(trained["run"])
    out = tmp_path / "t"
    embed_inputs_to_cache(run, "T", ["a", "b", "c"], out, rows_per_shard=2)
    want = _embedded(out)
    shard = out / open_cache(out).manifest["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    again = embed_inputs_to_cache(run, "T", ["a", "b", "c"], out, rows_per_shard=2)
    assert not again["reused"] and "is corrupt" in again["replaced"] and "delete" not in again["replaced"]
    got = _embedded(out)
    assert got[0] == want[0] and np.array_equal(got[1], want[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]  # no temp, set-aside folder or lock file left


@pytest.mark.parametrize("new_in", [False, True], ids=["killed-before-the-new-result", "killed-after-it"])
def test_a_swap_the_earlier_outdir_code_left_half_done_is_finished(trained, tmp_path, new_in):
    """embed and export before pcmpipe.folderswap replaced a damaged result in three steps: rename it to
    `.<out>.old-tmp`, rename the finished `.<out>.embed-tmp` to `out`, remove the aside. A job killed after the
    first step leaves no `out`: the rerun puts the old result back, finds it damaged and swaps the finished temp
    folder in; killed after the second, the rerun finds these embeddings and removes the aside. Either way
    nothing is left beside `out`."""

    run = pcmpipe.load_run(trained["run"])
    out = tmp_path / "t"
    embed_inputs_to_cache(run, "T", ["a", "b", "c"], out, rows_per_shard=2)
    want = _embedded(out)
    shutil.copytree(out, tmp_path / ".t.embed-tmp")  # the killed job's embeddings of the same inputs, whole
    shard = out / open_cache(out).manifest["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))  # why that job replaced the result
    os.replace(out, tmp_path / ".t.old-tmp")
    if new_in:
        os.replace(tmp_path / ".t.embed-tmp", out)
    again = embed_inputs_to_cache(run, "T", ["a", "b", "c"], out, rows_per_shard=2)
    assert again["reused"] == new_in and (new_in or "is corrupt" in again["replaced"]), again
    got = _embedded(out)
    assert got[0] == want[0] and np.array_equal(got[1], want[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


@pytest.mark.parametrize("case", ["a file", "under a file", "the run", "inside the run", "other files", "a link"])
def test_out_must_be_a_new_or_empty_folder(trained, tmp_path, case):
    run_copy = tmp_path / "run"
    if "run" in case:
        import shutil

        shutil.copytree(trained["run"], run_copy)
    (tmp_path / "f").write_text("x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    (tmp_path / "link").symlink_to(tmp_path / "busy")
    out = {
        "a file": tmp_path / "f",
        "under a file": tmp_path / "f" / "e",
        "the run": run_copy,
        "inside the run": run_copy / "emb",
        "other files": tmp_path / "busy",
        "a link": tmp_path / "link",
    }[case]
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    line = _one_line("embed", trained["run"], "--modality", "T", "--text", "x", "--out", out)
    assert str(out) in line or str(tmp_path / "f") in line, line
    assert sorted(str(p) for p in tmp_path.rglob("*") if not p.name.endswith((".lock", ".owner"))) == [
        p for p in before if not p.endswith((".lock", ".owner"))
    ]


@pytest.mark.parametrize(
    "flag, value, fragment",
    [
        ("--batch-size", "0", "--batch-size must be between 1 and 4096"),
        ("--batch-size", "-3", "--batch-size must be between 1 and 4096"),
        ("--workers", "-1", "--workers must be between 0 and"),
        ("--workers", "100000", "per CPU core"),
        ("--rows-per-shard", "0", "--rows-per-shard must be between 1 and"),
        ("--dtype", "float64", "unknown --dtype 'float64'"),
        ("--modality", "X", "has no modality 'X'; it has I, T"),
    ],
)
def test_bad_values_are_refused_before_torch_is_imported(trained, tmp_path, flag, value, fragment):
    """In a fresh interpreter: the refusal comes before torch (seconds of imports) is ever loaded."""
    args = ["embed", str(trained["run"]), "--modality", "I", "--text", "x", "--out", str(tmp_path / "e"), flag, value]
    code = (
        "import sys\nfrom pcmpipe.cli import app\ntry:\n    app(sys.argv[1:], prog_name='pcmpipe')\n"
        "except SystemExit as e:\n    print('exit', e.code, 'torch' in sys.modules)\n"
    )
    env = {**os.environ, **ENV}
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)
    assert proc.stdout.strip() == "exit 2 False", (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert not (tmp_path / "e").exists()


def test_a_text_file_that_is_not_utf8_is_one_line(trained, tmp_path):
    (tmp_path / "t.txt").write_bytes("café\n".encode("latin-1"))
    line = _one_line(
        "embed", trained["run"], "--modality", "T", "--text-file", tmp_path / "t.txt", "--out", tmp_path / "e"
    )
    assert "is not UTF-8: byte 0xe9 at offset 3" in line


def test_a_cache_of_other_features_is_refused(trained, tmp_path):
    run = pcmpipe.load_run(trained["run"])
    caches = trained["cache"] / "flickr8k"
    with pytest.raises(
        UserError, match=r"holds T features of clip-tiny-text .* was trained on features of clip-tiny-i"
    ):
        embed_cache_to_cache(run, "I", caches / "T" / "test", tmp_path / "t_as_i")
    other = tmp_path / "other"
    extract(
        "flickr8k", trained["data"], modalities=["I"], splits=["test"], device="cpu", workers=0,
        backbones={"image": "clip-tiny-image"}, weights={"image": "random:1"}, cache_root=other,
    )  # fmt: skip
    with pytest.raises(UserError, match="weights sha256"):
        embed_cache_to_cache(run, "I", other / "flickr8k" / "I" / "test", tmp_path / "w1")
    assert not (tmp_path / "t_as_i").exists() and not (tmp_path / "w1").exists()
    done = embed_cache_to_cache(run, "I", caches / "I" / "test", tmp_path / "own")
    with pytest.raises(UserError, match="holds embeddings already"):
        embed_cache_to_cache(run, "I", tmp_path / "own", tmp_path / "twice")
    assert done["rows"] == 2


def test_embed_reports_progress(trained, tmp_path):
    run = pcmpipe.load_run(trained["run"])
    seen: list[tuple[int, int]] = []
    texts = [f"caption {i}" for i in range(7)]
    embed_inputs_to_cache(run, "T", texts, tmp_path / "p", batch_size=3, progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (0, 7) and seen[-1] == (7, 7) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    images = trained["data"] / "Flicker8k_Dataset"
    res = CliRunner().invoke(
        app, ["embed", str(trained["run"]), str(images), "--modality", "I", "--workers", "0", "--batch-size", "5",
              "--out", str(tmp_path / "i")], env=ENV,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "embed I" in res.stderr and "12/12" in res.stderr


def test_the_python_api_bounds_its_sizes_too(trained, tmp_path):
    run = pcmpipe.load_run(trained["run"])
    with pytest.raises(UserError, match="workers must be between 0 and"):
        run.embed_inputs("T", ["x"], workers=100_000)
    with pytest.raises(UserError, match="batch_size must be between 1 and 4096"):
        run.embed("T", ["x"], batch_size=0)
    with pytest.raises(UserError, match="--workers must be between 0 and"):
        embed_inputs_to_cache(run, "T", ["x"], tmp_path / "e", workers=-1)
    assert not (tmp_path / "e").exists()
