"""Decoding workers die with their parent: a SIGKILLed `extract` leaves no DataLoader worker behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")

# The loader `extract` and fine-tuning decode through. Items are large, as decoded images and waves are: with
# nobody reading, a worker's queue stays full, and torch's own parent check ends its loop but then waits for the
# queue to drain forever (the orphans of the issue).
SCRIPT = """
import time, torch
from pcmpipe.extract.sources import decoding_loader

class Slow(torch.utils.data.Dataset):
    def __len__(self):
        return 10_000
    def __getitem__(self, i):
        time.sleep(0.05)
        return bytes(1 << 20)

for batch in decoding_loader(Slow(), [[i] for i in range(10_000)], 2, lambda items: items, pin=False, prefetch=2):
    print("batch", flush=True)
"""


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0]


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None and st[0] == pid:
            out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[1] != "Z"  # a zombie has exited; only its exit status is left to collect


@pytest.mark.slow  # a process with decoding workers, SIGKILLed
def test_workers_die_when_their_parent_is_sigkilled():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, env=env)
    workers: list[int] = []
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"batch\n"  # the workers are running
        workers = _children(proc.pid)
        assert len(workers) >= 2, workers
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [w for w in workers if _alive(w)], "a decoding worker outlived its SIGKILLed parent"
    finally:  # never leave a process behind, whatever failed
        proc.kill()
        proc.wait(timeout=10)
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
