"""Real `pcmpipe` processes without torch's import per process: `ForkedCli` keeps one interpreter with pcmpipe
(and what the commands import on their way) loaded, and forks a child per command.

Each child is a real process running the real CLI in its own session (process group); a test kills it with a
real SIGKILL, of the child alone (its decoding workers must then die by themselves) or of its whole group. A
fresh `python -m pcmpipe` pays 3-5 s of CPU for imports, which made a 20-kill sweep cost minutes.
(tests/kill_points.py forks the same way but kills a child from inside, at its n-th durable step.)
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

FORKER = r"""
import importlib, json, os, sys, time
import torch
torch.set_num_threads(1)
from pcmpipe.cli import app
# what the commands import on their way: a forked child then starts where a warm process would (a warm-up only,
# so a module another version lacks is skipped)
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError:
        pass
for line in sys.stdin:
    pids = []
    for argv, delay in json.loads(line):  # started together, each in its own process
        pid = os.fork()
        if pid == 0:
            os.setsid()  # its own process group: a group kill takes anything it started with it
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            time.sleep(delay)
            try:
                app(argv, prog_name="pcmpipe")
            except SystemExit as e:
                os._exit(e.code if isinstance(e.code, int) else 1)
            os._exit(0)
        pids.append(pid)
    print(json.dumps(pids), flush=True)
    print(json.dumps([os.waitpid(p, 0)[1] for p in pids]), flush=True)
"""


class ForkedCli:
    """One interpreter with pcmpipe imported, plus the modules named in `warm` (imported before the first fork,
    so no child imports them again). `start(argvs)` forks one child per `pcmpipe argv` at once -> their pids;
    `statuses()` waits for them -> their raw wait statuses; `run` does both, with a group SIGKILL on a timer."""

    def __init__(self, cwd: Path, env: dict[str, str], warm: Sequence[str] = ()):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FORKER, *warm], env=env, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    def start(self, argvs: list[list], delays: list[float] | None = None) -> list[int]:
        """Fork one child per argv, each starting its command after its delay in s -> their pids."""
        assert self.proc.stdin and self.proc.stdout
        jobs = [([str(a) for a in argv], delay) for argv, delay in zip(argvs, delays or [0.0] * len(argvs))]
        self.proc.stdin.write(json.dumps(jobs) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def statuses(self) -> list[int]:
        assert self.proc.stdout
        return json.loads(self.proc.stdout.readline())

    def run(
        self, argvs: list[list], kill_after: float | None = None, delays: list[float] | None = None
    ) -> list[int | None]:
        """Run the commands together; SIGKILL each one's process group after `kill_after` s unless all ended first
        -> exit codes (None: killed). Nothing of a killed group may outlive it."""
        pids = self.start(argvs, delays)
        assert self.proc.stdout
        ready, _, _ = select.select([self.proc.stdout], [], [], kill_after if kill_after is not None else 600)
        if not ready:
            for pid in pids:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:  # it ended between the timeout and the kill: its status says how
                    pass
        codes = [exit_code(s) for s in self.statuses()]
        for pid in pids:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                continue
            raise AssertionError(f"a process of the group of pcmpipe child {pid} outlived it")
        return codes

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def exit_code(status: int) -> int | None:
    """A child's exit code, or None when SIGKILL ended it."""
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return None
    return os.WEXITSTATUS(status)
