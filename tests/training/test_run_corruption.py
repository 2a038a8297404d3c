"""Corruption sweep over the files a run writes: flip a byte, truncate, delete each of config.json,
heads.safetensors, an embeddings file, metrics.jsonl, test_metrics.json, the pipeline record and the
checkpoint, then run every command that reads it (evaluate, report, run --dry-run, train's resume). Each must
end in one line naming the file (exit 2) or recover, and never print a number the undamaged run did not."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file, save_file
from synthetic_cache import write_synthetic_cache
from tiny_pipeline import tiny_pipeline
from typer.testing import CliRunner

from pcmpipe.cli import app
from pcmpipe.errors import UserError
from pcmpipe.pipelines.plan import make_plan
from pcmpipe.pipelines.run import run_pipeline
from pcmpipe.pipelines.spec import load_pipeline
from pcmpipe.report.build import build_report
from pcmpipe.report.render.markdown import report_markdown
from pcmpipe.training import rundir as runs
from pcmpipe.training.state import CHECKPOINT

pytestmark = pytest.mark.usefixtures("one_thread")

NAME = "c-pcmc"
NUMBER = re.compile(r"\d+\.\d+")
GENERATED = re.compile(r"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict:
    """A cache, a pipeline file, its finished run and record, and an interrupted run's checkpoint."""
    base = tmp_path_factory.mktemp("corruption")
    cache = base / "cache"
    write_synthetic_cache(cache, "synth", images={"train": 32, "val": 8, "test": 8})
    spec = base / "corrupt.yaml"
    spec.write_text(yaml.safe_dump(tiny_pipeline(cache, "corrupt", {NAME: "pcmc"})))
    runs_root = base / "runs"
    run_pipeline(load_pipeline(spec, cache_root=str(cache), runs_root=str(runs_root)))
    # an interrupted run under another name: its temp directory holds the epoch-1 checkpoint
    with pytest.MonkeyPatch.context() as m:
        m.setattr("pcmpipe.training.state.write_metrics", _stop)  # right after the first epoch's checkpoint
        assert CliRunner().invoke(app, _train_args(cache, runs_root, "part")).exit_code == 130
    assert (runs_root / ".tmp-part" / CHECKPOINT).is_file()
    evaluated = CliRunner().invoke(app, ["evaluate", str(runs_root / NAME), "--device", "cpu"])
    return {
        "cache": cache,
        "spec": spec,
        "runs": runs_root,
        "report": _report(runs_root),
        "evaluate": set(NUMBER.findall(evaluated.output)),
    }


def _stop(*args, **kwargs):
    raise KeyboardInterrupt


def _train_args(cache: Path, runs_root: Path, name: str) -> list[str]:
    return [
        "train",
        "--dataset",
        "synth",
        "--modalities",
        "I,T",
        "--cache-root",
        str(cache),
        "--runs-root",
        str(runs_root),
        "--name",
        name,
        "--epochs",
        "2",
        "--patience",
        "2",
        "--batch-size",
        "16",
        "--lr",
        "1e-3",
        "--set",
        "progress=false",
    ]


def _report(runs_root: Path) -> str:
    # the "generated <date> <HH:MM> UTC" line is the clock, not the runs: two reports a minute apart differ there
    md = report_markdown(build_report(runs_root)).replace(str(runs_root), "<runs>")
    return GENERATED.sub("generated <when> UTC", md)


def _damage(path: Path, how: str, rng: random.Random) -> None:
    data = path.read_bytes()
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flip":  # one byte anywhere (header, metadata or tensor data), XOR 0xFF
        i = rng.randrange(len(data))
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
    elif how == "no-metadata":  # the same tensors, written by another tool: no pcmpipe metadata
        save_file(load_file(str(path)), str(path))


def _check(res, names: list[str], reference_numbers: set[str]) -> str:
    """One command's outcome: recovered (exit 0, only numbers the undamaged run printed), or one line naming
    the damaged file (exit 2). -> 'ok' or 'refused'."""
    out = res.output
    assert "Traceback" not in out and (res.exception is None or isinstance(res.exception, SystemExit)), out
    if res.exit_code == 2:
        lines = [ln for ln in out.splitlines() if ln.strip()]
        assert len(lines) == 1 and any(n in lines[0] for n in names), out
        return "refused"
    assert res.exit_code == 0, out
    assert set(NUMBER.findall(out)) <= reference_numbers, out
    return "ok"


FILES = {
    "config.json": f"{NAME}/config.json",
    "heads": f"{NAME}/heads.safetensors",
    "embeddings": f"{NAME}/embeddings/I.safetensors",
    "metrics.jsonl": f"{NAME}/metrics.jsonl",
    "test_metrics.json": f"{NAME}/test_metrics.json",
    "record": "_pipelines/corrupt.json",
    "checkpoint": f".tmp-part/{CHECKPOINT}",
}
CASES = [(f, h) for f in FILES for h in ("flip", "truncate", "delete")] + [("heads", "no-metadata")]


@pytest.mark.parametrize("what,how", CASES, ids=[f"{f}-{h}" for f, h in CASES])
def test_a_damaged_run_file_is_named_or_recovered(pristine, tmp_path, what, how):
    runs_root = tmp_path / "runs"
    shutil.copytree(pristine["runs"], runs_root)
    target = runs_root / FILES[what]
    _damage(target, how, random.Random(f"{what}-{how}"))
    names = [target.name, target.parent.name]
    cli = CliRunner()
    run_dir = runs_root / NAME
    reference = set(NUMBER.findall(pristine["report"]))

    evaluated = cli.invoke(app, ["evaluate", str(run_dir), "--device", "cpu"])
    if what in ("config.json", "heads"):
        assert _check(evaluated, names, pristine["evaluate"]) == "refused"
    else:
        assert evaluated.exit_code == 0, evaluated.output

    # the report: never a number the undamaged run did not print; a damaged file it reads is named
    md = _report(runs_root)
    assert set(NUMBER.findall(md)) <= reference, md
    if what in ("test_metrics.json", "metrics.jsonl", "record", "config.json") and how != "delete":
        assert target.name in md, md
    if what == "test_metrics.json":
        assert "—" in md  # shown missing, not zero

    try:
        plan = {s.target: s.status for s in make_plan(_pipeline_of(pristine, runs_root))}
    except UserError as e:  # the planner reads config.json to compare fingerprints: one line naming it
        assert what == "config.json" and "config.json" in str(e) and "\n" not in str(e)
        plan = {}
    if what == "test_metrics.json":
        # the planner agrees with the report: the result is missing, so `run` trains it again
        assert plan[NAME] == "missing"
    elif what != "config.json":
        assert plan[NAME] == "cached"
    if what == "embeddings":  # read by zero-shot, enrichment and t-SNE
        with pytest.raises(UserError, match="I.safetensors"):
            runs.load_embeddings(run_dir)

    if what == "checkpoint":  # train's resume reads it
        res = cli.invoke(app, _train_args(pristine["cache"], runs_root, "part"))
        if how == "delete":
            assert res.exit_code == 0 and runs.result_ok(runs_root / "part"), res.output
        else:
            assert _check(res, [target.name, str(target)], set()) == "refused"


def _pipeline_of(pristine: dict, runs_root: Path):
    return load_pipeline(pristine["spec"], cache_root=str(pristine["cache"]), runs_root=str(runs_root))


def test_run_repairs_a_damaged_result_and_the_report_agrees(pristine, tmp_path):
    """A truncated test_metrics.json: `run` trains the run again (the damaged one kept aside) and the report
    then shows the same numbers as before the damage."""
    runs_root = tmp_path / "runs"
    shutil.copytree(pristine["runs"], runs_root)
    marker = runs_root / NAME / runs.COMPLETE_MARKER
    marker.write_bytes(marker.read_bytes()[:10])
    p = _pipeline_of(pristine, runs_root)
    events: list = []
    steps = run_pipeline(p, on_event=events.append)
    assert [s.status for s in steps if s.kind == "train"] == ["done"]
    assert any(runs.COMPLETE_MARKER in getattr(e, "text", "") for e in events)  # the note saying why
    assert (runs_root / f".damaged-{NAME}" / runs.COMPLETE_MARKER).read_bytes() == b'{\n  "epoch'[:10]
    assert "generated <when> UTC" in pristine["report"]  # only the clock is set aside
    assert _report(runs_root) == pristine["report"]
    assert all(s.status == "cached" for s in make_plan(p))


def test_heads_checksum_catches_a_flipped_weight(pristine, tmp_path):
    """safetensors checks its header, not the data: a flipped byte inside a weight loads silently unless the
    file's own sha256 is compared."""
    run_dir = tmp_path / NAME
    shutil.copytree(pristine["runs"] / NAME, run_dir)
    heads = run_dir / "heads.safetensors"
    data = bytearray(heads.read_bytes())
    data[-3] ^= 0x01  # the last tensor's data, far from the header
    heads.write_bytes(bytes(data))
    load_file(str(heads))  # safetensors alone accepts it
    res = CliRunner().invoke(app, ["evaluate", str(run_dir), "--device", "cpu"])
    assert res.exit_code == 2 and "heads.safetensors" in res.output and "Traceback" not in res.output
