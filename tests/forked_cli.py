"""Real `pcmpipe` processes without torch's import per process: `ForkedCli` keeps one interpreter with pcmpipe
(and what the commands import on their way) loaded, and forks a child per command.

Each child is a real process running the real CLI in its own session (process group); a test kills it with a
real SIGKILL, of the child alone (its decoding workers must then die by themselves) or of its whole group. A
fresh `python -m pcmpipe` pays 3-5 s of CPU for imports, which made a 20-kill sweep cost minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FORKER = r"""
import json, os, sys
import torch
torch.set_num_threads(1)
from pcmpipe.cli import app
{warm}
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        os.setsid()  # its own process group: a group kill takes anything it started with it
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        try:
            app(json.loads(line), prog_name="pcmpipe")
        except SystemExit as e:
            os._exit(e.code if isinstance(e.code, int) else 1)
        os._exit(0)
    print(pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print(status, flush=True)
"""


class ForkedCli:
    """One interpreter with pcmpipe imported (plus the modules named in `warm`, imported before the first fork so
    no child imports them again); `start(argv)` forks a child running `pcmpipe argv` and returns its pid,
    `status()` waits for that child and returns its raw wait status."""

    def __init__(self, cwd: Path, env: dict[str, str], warm: str = ""):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FORKER.replace("{warm}", warm)],
            env=env,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def start(self, argv: list[str]) -> int:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps([str(a) for a in argv]) + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def status(self) -> int:
        assert self.proc.stdout
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def exit_code(status: int) -> int | None:
    """A child's exit code, or None when SIGKILL ended it."""
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == 9
        return None
    return os.WEXITSTATUS(status)
