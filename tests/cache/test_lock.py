"""cache.lock.exclusive: a second job waits or refuses in one line; a lock left by a SIGKILLed process is reclaimed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pcmpipe.cache.lock import exclusive, lock_file
from pcmpipe.errors import UserError


def test_lock_file_is_a_hidden_sibling(tmp_path):
    assert lock_file(tmp_path / "split") == tmp_path / ".split.lock"


def test_second_holder_refuses_in_one_line_naming_the_holder(tmp_path):
    target = tmp_path / "ds" / "I" / "train"  # need not exist yet
    with exclusive(target, "cache ds/I/train", wait=False) as path:
        assert path == tmp_path / "ds" / "I" / ".train.lock"
        start = time.monotonic()
        with pytest.raises(UserError) as err, exclusive(target, "cache ds/I/train", wait=0.3):
            pass
        assert time.monotonic() - start >= 0.25  # a number waits that long first
        msg = str(err.value)
        assert "\n" not in msg and "cache ds/I/train" in msg and str(path) in msg
        assert f"pid {os.getpid()}" in msg
        with pytest.raises(UserError), exclusive(target, "cache ds/I/train", wait=False):
            pass
    with exclusive(target, "cache ds/I/train", wait=False):  # released: free again
        pass
    assert not (tmp_path / "ds" / "I" / ".train.lock.owner").exists()


def test_waiter_proceeds_when_the_holder_finishes(tmp_path):
    order = []
    held = threading.Event()

    def first():
        with exclusive(tmp_path / "x", "x", wait=False):
            held.set()
            time.sleep(0.3)
            order.append("first done")

    t = threading.Thread(target=first)
    t.start()
    held.wait(5)
    with exclusive(tmp_path / "x", "x", wait=True):
        order.append("second in")
    t.join()
    assert order == ["first done", "second in"]


def test_lock_of_a_sigkilled_holder_is_reclaimed(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from pcmpipe.cache.lock import exclusive
        with exclusive(Path({str(tmp_path / "split")!r}), "split", wait=False):
            print("held", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"pid {proc.pid}"), exclusive(tmp_path / "split", "split", wait=False):
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # the dead holder's lock file and owner record are still there; the OS lock is gone with the process
    assert lock_file(tmp_path / "split").exists()
    with exclusive(tmp_path / "split", "split", wait=False):
        pass
