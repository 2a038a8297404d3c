"""What a finished run's files.json and the safetensors content digest catch, and what they leave readable:
a file whose own checksum was stripped, a flipped value in a checkpoint's JSON part, and runs and checkpoints
written before either existed."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from synthetic_cache import write_synthetic_cache

from pcmpipe.config import TrainConfig
from pcmpipe.errors import UserError
from pcmpipe.training import rundir as runs
from pcmpipe.training.rundir.manifest import FILES, held_files, read_manifest
from pcmpipe.training.stage2 import train
from pcmpipe.training.state import CHECKPOINT, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A real stage-two run (one epoch, CPU) on a synthetic cache."""
    root = tmp_path_factory.mktemp("manifest")
    write_synthetic_cache(root / "cache", images={"train": 16, "val": 8, "test": 8})
    cfg = TrainConfig(
        dataset="synth",
        modalities=["I", "T"],
        cache_root=str(root / "cache"),
        runs_root=str(root / "runs"),
        name="m",
        epochs=1,
        batch_size=8,
        device="cpu",
        progress=False,
    )
    return train(cfg)


def _copy(run: Path, where: Path) -> Path:
    shutil.copytree(run, where / run.name)
    return where / run.name


def _header(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def _rewrite(path: Path, header: dict, body: bytes) -> None:
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + body)


def test_the_manifest_lists_every_file_of_the_finished_run(finished):
    manifest = read_manifest(finished)
    assert manifest is not None and sorted(manifest.files) == held_files(finished)
    assert {"config.json", "heads.safetensors", "test_metrics.json", "metrics.jsonl"} <= set(manifest.files)
    assert "embeddings/I.safetensors" in manifest.files and FILES not in manifest.files
    assert CHECKPOINT not in manifest.files  # dropped before the manifest is written


def test_embeddings_without_their_own_checksum_are_caught_by_the_manifest(finished, tmp_path):
    """Deleting the file's __metadata__ (its sha256) and flipping a value made it read as a file written before
    checksums existed; the run's manifest still knows its bytes."""
    run = _copy(finished, tmp_path)
    path = run / "embeddings" / "T.safetensors"
    header, body = _header(path)
    del header["__metadata__"]
    _rewrite(path, header, body[:-1] + bytes([body[-1] ^ 1]))
    with pytest.raises(UserError) as info:
        runs.load_embeddings(run)
    assert "T.safetensors" in str(info.value) and FILES in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["config.json", "metrics.jsonl", "heads.safetensors"])
def test_every_strict_reader_compares_its_file_with_the_manifest(finished, tmp_path, name):
    run = _copy(finished, tmp_path)
    with open(run / name, "ab") as f:
        f.write(b" ")  # still valid JSON, JSON lines and safetensors: only the manifest sees it
    read = {"config.json": runs.run_record, "metrics.jsonl": runs.read_metrics, "heads.safetensors": runs.load_heads}
    with pytest.raises(UserError, match=FILES):
        read[name](run)


def test_a_damaged_completion_marker_is_no_result(finished, tmp_path):
    run = _copy(finished, tmp_path)
    marker = run / runs.COMPLETE_MARKER
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "epoch": 7}))
    assert runs.result_ok(finished) and not runs.result_ok(run)


def test_a_run_written_before_the_manifest_reads_as_before(finished, tmp_path):
    run = _copy(finished, tmp_path)
    (run / FILES).unlink()
    assert runs.run_record(run).fingerprint == runs.run_record(finished).fingerprint
    assert runs.load_embeddings(run)["T"].embedding.equal(runs.load_embeddings(finished)["T"].embedding)


def _checkpoint(tmp_path: Path, finished: Path) -> Path:
    """A real checkpoint: the finished run's config trained for one epoch more, stopped after it."""
    cfg = TrainConfig.from_dict(runs.run_config(finished)["config"]).model_copy(
        update={"runs_root": str(tmp_path / "runs"), "epochs": 2}
    )
    events = []

    def stop(event):  # the second epoch's end: its checkpoint is written, the run not finished
        events.append(event)
        if type(event).__name__ == "EpochDone" and event.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_event=stop)
    return runs.temp_dir(cfg.runs_root, cfg.name)


def test_a_checkpoint_detects_a_change_of_its_json_and_an_old_one_still_resumes(finished, tmp_path):
    tmp = _checkpoint(tmp_path, finished)
    path = tmp / CHECKPOINT
    header, body = _header(path)
    meta = header["__metadata__"]
    assert "content_sha256" in meta and load_checkpoint(tmp) is not None
    state = json.loads(meta["pcmpipe"])
    state["state"]["best"] += 0.5  # a flipped digit of the best score
    _rewrite(path, {**header, "__metadata__": {**meta, "pcmpipe": json.dumps(state)}}, body)
    with pytest.raises(UserError, match="checkpoint"):
        load_checkpoint(tmp)
    # a checkpoint written before the content digest (none in its metadata) is read as it is
    old = {k: v for k, v in meta.items() if k != "content_sha256"}
    _rewrite(path, {**header, "__metadata__": old}, body)
    ckpt = load_checkpoint(tmp)
    assert ckpt is not None and ckpt.epoch == 1 and torch.is_tensor(ckpt.tensors["log_scale"])
