"""cache.lock.exclusive deletes its lock file when the job ends, and mutual exclusion still holds: real processes
contend for one lock, each checking in its critical section that nobody else is inside."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pcmpipe.cache.lock import exclusive, lock_file
from pcmpipe.errors import UserError

# Each worker enters the critical section `rounds` times. Inside, it creates a marker with O_EXCL (a second
# process inside at the same time finds it and exits 3), then increments a counter file read-modify-write.
WORKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from pcmpipe.cache.lock import exclusive
    target, rounds = Path(sys.argv[1]), int(sys.argv[2])
    marker, counter = target.parent / "inside", target.parent / "counter"
    for _ in range(rounds):
        with exclusive(target, "shared thing", wait=True):
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                sys.exit(3)
            value = int(counter.read_text()) if counter.exists() else 0
            time.sleep(0.001)
            counter.write_text(str(value + 1))
            os.close(fd)
            marker.unlink()
    """
)


@pytest.mark.slow
def test_lock_files_are_deleted_and_exclusion_holds_under_contention(tmp_path):
    """Four processes x 60 rounds on one lock: every round is counted once, no two processes are ever inside
    together, and no lock file or owner record is left when they end. A waiter that opened the lock file just
    before its holder deleted it must notice that it locked a deleted inode and retry (pcmpipe.cache.lock)."""
    target, rounds, workers = tmp_path / "thing", 60, 4
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(target), str(rounds)], stderr=subprocess.PIPE, text=True)
        for _ in range(workers)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * workers, errors
    assert int((tmp_path / "counter").read_text()) == rounds * workers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter"]  # no .thing.lock, no .thing.lock.owner


def test_a_finished_job_leaves_no_lock_file_and_a_held_lock_keeps_its_file(tmp_path):
    target = tmp_path / "split"
    with exclusive(target, "split", wait=False) as path:
        assert path.is_file()  # held: the file is the lock
        with pytest.raises(UserError, match="in use"), exclusive(target, "split", wait=False):
            pass
        assert path.is_file()  # a refused job takes nothing away from the holder
    assert not lock_file(target).exists()
    with pytest.raises(RuntimeError), exclusive(target, "split", wait=False):
        raise RuntimeError("a job that fails also ends")
    assert list(tmp_path.iterdir()) == []
