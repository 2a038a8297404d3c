"""SIGKILL a training run (and every process it started) at its first checkpoint within an epoch after the first.

The run checkpoints every few steps (`checkpoint_every`); `kill_within_an_epoch` watches the checkpoint file, and
each time it changes stops the whole process tree (SIGSTOP), reads the checkpoint, and SIGKILLs the tree if it
is a mid-epoch one of epoch 2 or later, else lets it go on (SIGCONT). The kill lands a step or so after that
checkpoint, sometimes while the next one is being written, so a resume redoes steps and drops a stray file.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from pcmpipe.training import rundir as runs
from pcmpipe.training.state import CHECKPOINT, Checkpoint, load_checkpoint

# what a torchrun --standalone launch that lost its port race prints (a rerun picks another port)
PORT_CLASH = re.compile(r"address already in use|EADDRINUSE|Rendezvous\w*Error|DistNetworkError", re.IGNORECASE)


def train_command(config: dict, where: Path, launcher: list[str] | None = None) -> list[str]:
    """`pcmpipe train --config <yaml of config>`, optionally under a launcher (torchrun's arguments)."""
    path = where / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return [sys.executable, *(launcher or []), "-m", "pcmpipe", "train", "--config", str(path)]


def process_tree(pid: int) -> list[int]:
    """pid and its live descendants (torchrun starts its ranks in sessions of their own: a process-group kill
    would miss them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone while listed
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def signal_tree(tree: list[int], sig: signal.Signals) -> None:
    for p in tree:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def kill_within_an_epoch(cmd: list[str], tmp: Path, log: Path, env: dict, timeout: float = 300) -> Checkpoint:
    """Run `cmd`; SIGKILL it (and every process it started) at its first checkpoint inside epoch 2 or later
    (module docstring) -> that checkpoint, the one the resume starts from. A launch that lost a port race
    before its first checkpoint is started once more."""
    try:
        return _kill_within_an_epoch(cmd, tmp, log, env, timeout)
    except _PortClash:
        return _kill_within_an_epoch(cmd, tmp, log, env, timeout)


class _PortClash(Exception):
    pass


def _kill_within_an_epoch(cmd: list[str], tmp: Path, log: Path, env: dict, timeout: float) -> Checkpoint:
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    seen = None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                if PORT_CLASH.search(log.read_text()) and not tmp.exists():
                    raise _PortClash
                pytest.fail(f"the run ended (rc={proc.returncode}) before a mid-epoch checkpoint:\n{log.read_text()}")
            try:
                stat = (tmp / CHECKPOINT).stat()
            except FileNotFoundError:
                time.sleep(0.002)
                continue
            if (stat.st_ino, stat.st_mtime_ns) != seen:  # written atomically: a new file each time
                tree = process_tree(proc.pid)
                signal_tree(tree, signal.SIGSTOP)
                ckpt = load_checkpoint(tmp)
                assert ckpt is not None
                if ckpt.progress is not None and ckpt.epoch >= 1:
                    signal_tree(tree, signal.SIGKILL)
                    proc.wait()
                    return ckpt
                seen = (stat.st_ino, stat.st_mtime_ns)
                signal_tree(tree, signal.SIGCONT)
            time.sleep(0.002)
        pytest.fail(f"no mid-epoch checkpoint within {timeout}s")
    finally:
        if proc.poll() is None:
            signal_tree(process_tree(proc.pid), signal.SIGKILL)
            proc.wait()


def tensors(path: Path) -> dict[str, bytes]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k).reshape(-1).view(torch.uint8).numpy().tobytes() for k in f.keys()}


def outcome(run: Path) -> dict:
    """What an interrupted run must reproduce exactly (timings and config.json's argv aside, and so files.json,
    which records the bytes of both)."""
    history = [{k: v for k, v in r.items() if "time" not in k} for r in runs.read_metrics(run)]
    results = {
        p.name: runs.read_json(p) for p in sorted(run.glob("*.json")) if p.name not in ("config.json", "files.json")
    }
    return {"history": history, **results, **{str(p.relative_to(run)): tensors(p) for p in run.rglob("*.safetensors")}}


def run_train(cmd: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `cmd` to its end; once more if it lost a torchrun port race. It must succeed."""
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 and PORT_CLASH.search(done.stdout + done.stderr):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done
