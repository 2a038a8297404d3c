"""Shared helpers of the benchmark scripts: timing as ratios, the machine's matmul rate, the results table.

Absolute times on shared machines are noisy, so every benchmark times our path and its baseline in the same
process, alternating them (ours, baseline, ours, ...) so a load spike hits both, and reports the ratio of
medians. Each script then rewrites its own row of the table in docs/performance.md (`write_row`).

Clock: `--clock wall` (default) is what a user waits for. On a machine shared with other jobs, `--clock cpu`
measures CPU seconds instead (`cpu_seconds`: every thread of this process and of its finished children,
such as DataLoader workers; nothing of unrelated processes), which keeps ratios meaningful under load; with
`--threads 1` CPU seconds equal wall seconds on an idle machine. The matmul rate of the FLOP floors is measured
with the same clock.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PERF_DOC = REPO / "docs" / "performance.md"
TABLE_BEGIN = "<!-- benchmark table: rows are rewritten by benchmarks/*.py -->"
TABLE_END = "<!-- end of benchmark table -->"
HEADER = (
    "| what | target | measured | ratio | meets target | machine, date | command |\n"
    "| --- | --- | --- | --- | --- | --- | --- |"
)


def own_peak_rss() -> int:
    """This process's own peak RSS in bytes: VmHWM of /proc/self/status, ru_maxrss where there is no /proc.

    Not ru_maxrss first: Linux carries the parent's high-water mark into a child started by vfork + exec
    (subprocess's default), so a child measured after its parent wrote a large cache reports the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """Common flags: --smoke (tiny sizes, seconds; used by the tests), --device, --doc (table file), --threads."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds: checks the script runs")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    p.add_argument("--doc", type=Path, default=PERF_DOC, help="markdown file whose table row is rewritten")
    p.add_argument("--no-write", action="store_true", help="print the result only")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed seconds; cpu: this process's CPU seconds (robust on a loaded machine)",
    )
    if extra is not None:
        extra(p)
    args = p.parse_args()
    set_clock(args.clock)
    if args.clock == "cpu" and args.device.startswith("cuda"):
        p.error("--clock cpu cannot time GPU work; use --clock wall")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is available")
    return args


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (e.g. DataLoader workers), all threads.

    getrusage, not os.times: os.times counts in clock ticks (10 ms here), which quantised a 20 ms matmul burst
    to 20 ms or 30 ms and inflated the measured matmul rate (every FLOP floor) by up to 50 %."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


_CLOCK = {"wall": time.perf_counter, "cpu": cpu_seconds}
now = time.perf_counter  # the benchmark clock; set_clock switches it


def set_clock(kind: str) -> None:
    global now
    now = _CLOCK[kind]


def clock_name() -> str:
    return "CPU s" if now is cpu_seconds else "wall s"


def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work, so wall time measures the work and not its launch."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str | torch.device = "cpu") -> tuple[float, object]:
    """(seconds, result) of one call of fn."""
    sync(device)
    t0 = now()
    out = fn()
    sync(device)
    return now() - t0, out


def compare(
    ours: Callable[[], object],
    baseline: Callable[[], object],
    *,
    repeats: int = 3,
    warmup: int = 1,
    device: str | torch.device = "cpu",
) -> dict:
    """Alternate ours/baseline `repeats` times after `warmup` rounds -> medians, all times and ratio.

    ratio = median(baseline) / median(ours): > 1 means our path is faster.
    """
    for _ in range(warmup):
        ours()
        baseline()
    t_ours, t_base = [], []
    for _ in range(repeats):
        t_ours.append(timed(ours, device)[0])
        t_base.append(timed(baseline, device)[0])
    m_ours, m_base = statistics.median(t_ours), statistics.median(t_base)
    return {
        "ours_s": m_ours,
        "baseline_s": m_base,
        "speedup": m_base / m_ours,
        "ours_all": t_ours,
        "baseline_all": t_base,
    }


def matmul_rate(
    device: str | torch.device = "cpu", n: int = 1024, dtype: torch.dtype = torch.float32, seconds: float = 1.0
) -> float:
    """Sustained FLOP/s of an n x n x n matmul (best of repeated bursts over about `seconds`).

    This is the machine's practical peak for the dtype on this device with torch's current thread count:
    the denominator of every "FLOP floor" in docs/performance.md.
    """
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)
    reps = 1 if torch.device(device).type == "cpu" else 20
    return 2.0 * n**3 / best_of(lambda: torch.mm(a, b, out=out), reps, seconds, device)


def best_of(fn: Callable[[], object], reps: int, seconds: float, device: str | torch.device = "cpu") -> float:
    """Seconds per call of fn: bursts of `reps` calls for about `seconds` (at least one burst), the fastest burst.

    For "what this machine can do" figures (matmul rate, matrix products alone), where load from other jobs only
    ever slows a burst down."""
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while True:
        sync(device)
        t0 = now()
        for _ in range(reps):
            fn()
        sync(device)
        best = min(best, (now() - t0) / reps)
        if time.perf_counter() > deadline:
            return best


def machine(device: str | torch.device = "cpu") -> str:
    """One line naming the hardware the numbers were taken on."""
    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    return (
        f"CPU {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {clock_name()} "
        f"(torch {torch.__version__})"
    )


def command_line() -> str:
    """How this script was run, relative to the repository root, without --doc / --no-write noise."""
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a == "--doc":
            skip = True
            continue
        if a.startswith("--doc=") or a == "--no-write":
            continue
        args.append(a)
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(REPO)
    except ValueError:
        pass
    return " ".join(["python", str(script), *args])


def write_row(
    doc: Path,
    what: str,
    target: str,
    measured: str,
    ratio: str,
    ok: bool | None,
    device: str | torch.device = "cpu",
    table: tuple[str, str] = (TABLE_BEGIN, TABLE_END),
) -> str:
    """Insert or replace the table row whose first cell is `what` in `doc`; returns the row.

    The table sits between the markers `table` (begin, end; default: the CPU table's); a missing file or table
    is created. Other rows and the rest of the document are left untouched.
    """
    begin, end = table
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    verdict = "n/a" if ok is None else ("yes" if ok else "**no**")
    cells = [what, target, measured, ratio, verdict, f"{machine(device)}, {date}", f"`{command_line()}`"]
    row = "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
    text = doc.read_text() if doc.exists() else "# Performance\n"
    if begin not in text:
        text = text.rstrip("\n") + f"\n\n{begin}\n{HEADER}\n{end}\n"
    head, rest = text.split(begin, 1)
    rows, tail = rest.split(end, 1)
    lines = [ln for ln in rows.strip("\n").splitlines() if ln.strip()]
    body = [ln for ln in lines[2:]]
    key = re.compile(r"^\|\s*" + re.escape(what.replace("|", "\\|")) + r"\s*\|")
    body = [row if key.match(ln) else ln for ln in body]
    if not any(ln == row for ln in body):
        body.append(row)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(f"{head}{begin}\n{HEADER}\n" + "\n".join(body) + f"\n{end}{tail}")
    return row


def report(args: argparse.Namespace, what: str, target: str, measured: str, ratio: str, ok: bool | None) -> None:
    """Print the result and, unless --no-write, rewrite the row in args.doc. Smoke runs label their row."""
    if args.smoke:
        what = f"{what} (smoke sizes)"
    print(f"{what}: {measured}; {ratio}; meets target ({target}): {ok}")
    if not args.no_write:
        write_row(args.doc, what, target, measured, ratio, ok, args.device)
        print(f"row written to {args.doc}")
