"""What this machine can give a job, and the bounds every sizing setting is checked against before work starts.

A setting that sizes processes, threads, memory or output (`--workers`, `--threads`, `--views`, `--batch-size`,
...) is checked here, with a message that names the limit and where it comes from. Without a bound one careless
flag can start thousands of processes or ask for more memory than the machine has, and on a shared machine the
kernel's OOM killer then ends other people's jobs, not only this one.

The machine's size is read from what this process may really use: the CPUs of its affinity mask (a container
or `taskset` gives fewer than `os.cpu_count()`), and the smaller of physical memory and a cgroup memory limit.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from pcmpipe.errors import UserError

# Decoding processes beyond 4 per core only add context switches (and each holds a decoded batch in memory).
WORKERS_PER_CORE = 4
# torch's thread pools: beyond 4 per core a pool only adds context switches, and each thread's stack adds up.
THREADS_PER_CORE = 4
_CGROUP_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def memory_bytes() -> int:
    """Memory this process may use: physical memory, or a smaller cgroup limit."""
    total = _physical_memory()
    for name in _CGROUP_FILES:
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 1 << 34  # 16 GiB: only where the OS cannot say


def max_workers() -> int:
    return WORKERS_PER_CORE * cpu_cores()


def max_threads() -> int:
    return THREADS_PER_CORE * cpu_cores()


def check_int(flag: str, value: object, *, low: int, high: int, why: str = "") -> int:
    """`value` as an int within [low, high], else one UserError line: '--workers must be between 0 and 8 (4 per
    CPU core of this machine's 2), got 100000'. `why` says where `high` comes from."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value != int(value):
        raise UserError(f"{flag} must be a whole number, got {value!r}")
    number = int(value)
    if not low <= number <= high:
        reason = f" ({why})" if why else ""
        raise UserError(f"{flag} must be between {low} and {high}{reason}, got {number}")
    return number


def check_workers(flag: str, value: int | None) -> int | None:
    """Decoding or loading processes: 0 (this process) to 4 per core; None keeps the command's default."""
    if value is None:
        return None
    return check_int(
        flag, value, low=0, high=max_workers(), why=f"{WORKERS_PER_CORE} per CPU core; this machine has {cpu_cores()}"
    )


def check_threads(flag: str, value: int | None) -> int | None:
    if value is None:
        return None
    return check_int(
        flag, value, low=1, high=max_threads(), why=f"{THREADS_PER_CORE} per CPU core; this machine has {cpu_cores()}"
    )


def check_positive(flag: str, value: float, *, allow_zero: bool = False) -> float:
    """A finite number > 0 (or >= 0): timeouts, rates. NaN and infinity are refused, as are negatives."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserError(f"{flag} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise UserError(f"{flag} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return value


def check_memory(flag: str, need_bytes: float, what: str, *, fraction: float = 0.5) -> None:
    """Refuse a setting whose estimated allocation exceeds `fraction` of this machine's memory (the rest is for
    the model, the other buffers and other jobs). `what` says what would take the memory."""
    budget = fraction * memory_bytes()
    if need_bytes > budget:
        raise UserError(
            f"{flag}: {what} would take about {need_bytes / 2**30:.1f} GiB, more than {fraction:.0%} of this "
            f"machine's {memory_bytes() / 2**30:.1f} GiB of memory; lower it"
        )
