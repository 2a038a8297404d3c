"""Every GPU figure in one command, each measurement in its own process under its own time cap.

    python benchmarks/gpu.py --device cuda --budget-s 420      # on the device machine
    python benchmarks/gpu.py --smoke --no-write                # tiny sizes on CPU (tests/integration runs it)

In turn (benchmarks/_device_rows.py holds each): ViT-B/32 image extraction end to end from JPEG files against
the bare forward at the same precision; CLIP text extraction against stock `encode_text`; HuBERT-Base speech
extraction in audio seconds per second; one stage-two epoch at Flickr8k scale against the plain PyTorch loop
(benchmarks/plain_loop.py); flat search over 10^6 x 256 fp16 against the matmul floor. Random weights, the
paper's architectures.

The budget is split between the measurements by SHARES; a measurement that runs past its cap is killed (its
child process ends, GPU memory with it) and its row says so, and the next one starts. Rows go into the GPU
table of docs/performance.md (between GPU_TABLE's markers), each with the device name, torch and CUDA versions
(the machine cell) and the precision (the measured cell). Every figure is also saved as JSON: under $OUT
(gpu.json) when that variable is set, and at --json. A summary table is printed at the end.

Processes: forked on CPU (cheap: the parent's imports are shared), spawned on CUDA (a forked child cannot use
CUDA once the parent touched it).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _device_rows  # noqa: E402
import _timing  # noqa: E402

GPU_TABLE = ("<!-- GPU table: rows are rewritten by benchmarks/gpu.py -->", "<!-- end of GPU table -->")
# share of the budget per measurement: image extraction and training build the largest inputs
SHARES = {"image": 0.28, "text": 0.10, "speech": 0.17, "train": 0.30, "search": 0.15}


def _child(name: str, args: argparse.Namespace, out: str) -> None:
    """One measurement in this (child) process; its row (or the row so far, `emit`), or its error, goes to the
    JSON file `out`."""
    if args.threads:
        torch.set_num_threads(args.threads)

    def emit(row: dict) -> None:
        Path(out).write_text(json.dumps({**row, "partial": True}))

    try:
        row = _device_rows.SECTIONS[name](args, emit)
    except BaseException as e:  # the parent reports it as the row; the other measurements still run
        lines = traceback.format_exc().strip().splitlines()
        row = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}", "trace": lines[-8:]}
    Path(out).write_text(json.dumps(row))


def run_section(name: str, args: argparse.Namespace, cap: float) -> dict:
    """Run measurement `name` in a child process for at most `cap` seconds -> its row (a failed or killed one
    says why in its measured cell; one killed after `emit` keeps the row it emitted, marked as cut)."""
    ctx = mp.get_context("spawn" if args.device.startswith("cuda") else "fork")
    with tempfile.TemporaryDirectory(prefix="pcmpipe-gpu-") as tmp:
        out = Path(tmp) / "row.json"
        t0 = time.perf_counter()
        proc = ctx.Process(target=_child, args=(name, args, str(out)))
        proc.start()
        proc.join(cap)
        if proc.is_alive():
            proc.kill()
            proc.join()
        seconds = time.perf_counter() - t0
        row = json.loads(out.read_text()) if out.is_file() else None
    base = {"what": _device_rows.WHAT[name], "target": "", "ratio": "", "ok": None, "figures": {}}
    why = f"ran past its cap of {cap:.0f} s" if seconds >= cap else f"exited with code {proc.exitcode}"
    if row is None:
        row = {**base, "measured": f"not measured: {why}"}
    elif "error" in row:
        row = {**base, "measured": f"not measured: {row['error']}", "figures": {"trace": row["trace"]}}
    elif row.pop("partial", False):
        row["measured"] += f" (the rest {why})"
    row["seconds"], row["cap_s"] = seconds, cap
    return row


def environment(args: argparse.Namespace) -> dict:
    """The device, versions and precision every row was measured with."""
    cuda = args.device.startswith("cuda")
    return {
        "device": torch.cuda.get_device_name() if cuda else _timing.machine("cpu"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "precision": args.precision,
        "command": _timing.command_line(),
    }


def summary_table(names: list[str], rows: list[dict]) -> str:
    """The rows measured (`names`, in order) as aligned text: name, measured, ratio, verdict."""
    verdict = {True: "yes", False: "NO", None: "-"}
    lines = [f"{'measurement':<10} {'verdict':<7} {'ratio':<22} measured"]
    for name, row in zip(names, rows):
        lines.append(f"{name:<10} {verdict[row['ok']]:<7} {row['ratio']:<22} {row['measured']}")
    return "\n".join(lines)


def main() -> None:
    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument("--budget-s", type=float, default=420.0, help="seconds for all measurements together")
        p.add_argument("--only", default=",".join(SHARES), help=f"comma list of {', '.join(SHARES)}")
        p.add_argument("--precision", default=None, help="fp32 | fp16 | bf16 (default: fp16 on CUDA, fp32 on CPU)")
        p.add_argument("--images", type=int, default=8192, help="JPEG files of the image measurement")
        p.add_argument("--captions", type=int, default=16384, help="captions of the text measurement")
        p.add_argument("--utterances", type=int, default=256, help="1-10 s utterances of the speech measurement")
        p.add_argument("--json", type=Path, default=None, help="also write every figure here")

    args = _timing.parse_args(__doc__.splitlines()[0], extra)
    from pcmpipe.extract import precision as arithmetic

    args.precision = arithmetic.resolve(args.precision, torch.device(args.device))
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SHARES))
    if unknown:
        raise SystemExit(f"--only: unknown measurement {', '.join(unknown)}; choose from {', '.join(SHARES)}")
    total = sum(SHARES[n] for n in names)
    rows = []
    for name in names:
        cap = args.budget_s * SHARES[name] / total
        print(f"{name}: at most {cap:.0f} s", flush=True)
        rows.append(run_section(name, args, cap))
        print(f"  {rows[-1]['measured']} ({rows[-1]['seconds']:.0f} s)", flush=True)
    result = {**environment(args), "smoke": args.smoke, "rows": dict(zip(names, rows))}
    targets = [Path(os.environ["OUT"]) / "gpu.json"] if os.environ.get("OUT") else []
    for path in targets + ([args.json] if args.json else []):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
        print(f"figures saved to {path}")
    if not args.no_write:
        for row in rows:
            what = f"{row['what']} (smoke sizes)" if args.smoke else row["what"]
            measured = f"{row['measured']}; precision {args.precision}"
            _timing.write_row(args.doc, what, row["target"], measured, row["ratio"], row["ok"], args.device, GPU_TABLE)
        print(f"rows written to {args.doc}")
    print(summary_table(names, rows))


if __name__ == "__main__":
    main()
