"""SIGKILL a real `pcmpipe` command at each of its durable steps, in turn.

Every file pcmpipe keeps, and every folder it swaps into place, goes through `pcmpipe.atomic.replace` (the rename
that makes a write final); `export` also copies files with `shutil.copy2`. `KillPoints.run(argv, kill_at=n)`
runs the CLI in a child process that SIGKILLs itself just before the n-th of those calls, so the files on disk
are exactly what a kill at that moment leaves (a finished temp file not yet renamed, a shard not yet listed, a
whole temp folder not yet swapped in). `kill_at=0` runs to the end and reports how many steps there were, so a
test can sweep them all. `fsize=N` caps the child's file size at N bytes (RLIMIT_FSIZE: Python ignores SIGXFSZ,
so a write past it fails with EFBIG, as a full disk fails with ENOSPC).

The children are forked from one interpreter that has imported pcmpipe and torch already (as the fault sweep
of tests/integration/test_run_faults.py does): each is a real process killed by a real SIGKILL, without paying
torch's import (seconds of CPU) per kill.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "NO_COLOR": "1"}

FORKER = r"""
import json, os, resource, shutil, signal, sys
import torch
torch.set_num_threads(1)
from pcmpipe import atomic
from pcmpipe.cli import app
import pcmpipe.runs.loaded, pcmpipe.runs.embed, pcmpipe.runs.export, pcmpipe.cli.render, pcmpipe.extract.runner
import open_clip, pcmpipe.backbones.clip  # the backbone a run embeds with: built in every child otherwise


def child(job):
    os.setsid()
    out = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(out, 1)
    os.dup2(out, 2)
    if job["fsize"]:
        resource.setrlimit(resource.RLIMIT_FSIZE, (job["fsize"], job["fsize"]))
    steps = [0]

    def step(real):
        def wrapped(*args, **kwargs):
            steps[0] += 1
            if steps[0] == job["kill_at"]:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        return wrapped

    atomic.replace = step(atomic.replace)
    shutil.copy2 = step(shutil.copy2)
    code = 0
    try:
        app(job["argv"], prog_name="pcmpipe")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    with open(job["log"] + ".steps", "w") as f:
        f.write(str(steps[0]))
    os._exit(code)


for line in sys.stdin:
    pids = []
    for job in json.loads(line):  # started together, each in its own process
        pid = os.fork()
        if pid == 0:
            child(job)
        pids.append(pid)
    print(json.dumps([os.waitpid(pid, 0)[1] for pid in pids]), flush=True)
"""


class KillPoints:
    """One prepared interpreter; `run` forks a child running `pcmpipe argv` (module docstring), `together`
    several at once."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FORKER], env=ENV, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def run(self, argv: list, kill_at: int = 0, fsize: int | None = None) -> tuple[int | None, str, int]:
        """-> (exit code, or None when it was SIGKILLed; its stdout and stderr; durable steps it took)."""
        return self.together([argv], kill_at=kill_at, fsize=fsize)[0]

    def together(self, argvs: list[list], kill_at: int = 0, fsize: int | None = None) -> list:
        """Start one child per argv at once, wait for all -> one `run` result each."""
        assert self.proc.stdin and self.proc.stdout
        logs = [self.cwd / f"child{i}.log" for i in range(len(argvs))]
        jobs = [
            {"argv": [str(a) for a in argv], "kill_at": kill_at, "fsize": fsize, "log": str(log)}
            for argv, log in zip(argvs, logs)
        ]
        self.proc.stdin.write(json.dumps(jobs) + "\n")
        self.proc.stdin.flush()
        return [
            self._result(status, log, kill_at) for status, log in zip(json.loads(self.proc.stdout.readline()), logs)
        ]

    @staticmethod
    def _result(status: int, log: Path, kill_at: int) -> tuple[int | None, str, int]:
        text = log.read_text()
        steps_file = Path(str(log) + ".steps")
        steps = int(steps_file.read_text()) if steps_file.is_file() else kill_at
        steps_file.unlink(missing_ok=True)
        if os.WIFSIGNALED(status):
            assert os.WTERMSIG(status) == 9, text
            return None, text, steps
        return os.WEXITSTATUS(status), text, steps

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
