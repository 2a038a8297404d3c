"""`pcmpipe report`: tables beside the paper's values, provenance, missing runs as "—", Markdown and HTML.

Run directories here are written in the trainer's file format (config.json, test_metrics.json, ...) with
chosen numbers, so each printed value can be traced to the file it came from; test_demo.py covers the report of
real trained runs end to end.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from pcmpipe.cli import app
from pcmpipe.pipelines.run import write_record
from pcmpipe.pipelines.spec import load_pipeline
from pcmpipe.report.build import build_report, write_report
from pcmpipe.report.builders import build_table
from pcmpipe.report.display import display_rows
from pcmpipe.report.paper import paper_tables, paper_value
from pcmpipe.report.render.html import report_html
from pcmpipe.report.render.terminal import print_report
from pcmpipe.report.results import load_runs

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def write_run(
    runs_root: Path,
    name: str,
    config: dict,
    metrics: dict,
    level: str = "instance",
    untrained: dict | None = None,
    chance: dict | None = None,
    fingerprint: str = "f" * 64,
) -> Path:
    """A run directory in the trainer's layout; `metrics` = {'I->T': {'r@1': 50.0, ...}} at `level`."""
    d = runs_root / name
    d.mkdir(parents=True)
    cfg = {"name": name, "match": level, "cache_root": str(runs_root.parent), **config}
    (d / "config.json").write_text(json.dumps({"config": cfg, "fingerprint": fingerprint}))
    test = {"epoch": 3, "match": level, level: metrics}
    if chance is not None:
        test["chance"] = {level: chance}
    (d / "test_metrics.json").write_text(json.dumps(test))
    if untrained is not None:
        (d / "untrained_metrics.json").write_text(json.dumps({"epoch": 0, level: untrained}))
    (d / "metrics.jsonl").write_text(
        "".join(json.dumps({"epoch": e, "loss": 3.0 / e, "val_mean_r@1": 10.0 * e}) + "\n" for e in (1, 2, 3))
    )
    return d


def test_paper_values_load_and_missing_cells_are_none():
    assert paper_value("table1_flickr8k/r@1/PCMR/I->T") == 66.8
    assert paper_value("table7_cub_r@1/rows/PCMC fine-tuned/C->A") == 93.9
    assert paper_value("table1_flickr8k/r@1/MILAN I+S/I->T") is None  # blank in the paper: never 0
    assert paper_value("no/such/path") is None


def test_pair_average_reproduces_table2_from_table7_directions(tmp_path):
    """Feeding Table 7's per-direction r@1 as a run's metrics, the Table 2 builder gives the paper's Table 2
    (the paper's own known inconsistency, PCMC fine-tuned C+A, excepted)."""
    p = load_pipeline(PIPELINES / "table2_6_7_cub.yaml")
    layout = next(t for t in p.tables if t["kind"] == "pair_average")
    runs_root = tmp_path / "runs"
    for row in layout["rows"]:
        dirs = paper_tables()["table7_cub_r@1"]["rows"][row["paper_row"]]
        rp = paper_tables()["table6_cub_R-P"]["rows"][row["paper_row"]]
        metrics = {d: {"r@1": v, "R-P": rp[d]} for d, v in dirs.items()}
        write_run(runs_root, row["run"], {"dataset": "cub", "modalities": ["I", "T", "A", "C"]}, metrics, level="class")
    table = build_table(layout, load_runs(runs_root))
    checked = 0
    for row in table.rows:
        if row.kind != "run":
            continue
        for (metric, col), cell in zip([(m, c) for m in layout["metrics"] for c in layout["columns"]], row.cells):
            if row.label == "PCMC fine-tuned" and metric == "r@1" and col == "C+A":
                assert cell.ours == pytest.approx(76.3, abs=0.05) and cell.paper == 75.8
                continue
            assert cell.ours == pytest.approx(cell.paper, abs=0.051), (row.label, metric, col)
            checked += 1
    assert checked == 8 * 12 - 1


def _record_and_report(tmp_path: Path, pipeline: str, runs: dict[str, dict], **load) -> tuple:
    p = load_pipeline(PIPELINES / pipeline, cache_root=str(tmp_path / "cache"), **load)
    for name, metrics in runs.items():
        cfg = p.runs[name].train.to_dict()
        write_run(
            Path(p.runs_root),
            name,
            cfg,
            metrics,
            level=cfg["match"],
            untrained={d: {"r@1": 1.0} for d in metrics},
            chance={d: {"r@1": 0.5} for d in metrics},
            fingerprint=p.runs[name].fingerprint,  # the report uses a run only under the config it planned
        )
    write_record(p)
    return p, build_report(Path(p.runs_root))


def test_table1_ours_paper_delta_and_missing_run(tmp_path):
    dirs = ["I->T", "T->I", "I->S", "S->I", "T->S", "S->T"]
    _, report = _record_and_report(
        tmp_path, "table1_flickr8k.yaml", {"flickr8k-pcmr-ITS": {d: {"r@1": 60.0, "r@5": 80.0} for d in dirs}}
    )
    sec = report.sections[0]
    assert sec.missing_runs == {"flickr8k-pcmc-ITS"}
    rows = {label: (style, cells) for style, label, cells in display_rows(sec.tables[0])}
    # both match levels (T<->S by caption or by image); the run holds instance-level metrics only, so the
    # image-level rows are dashes and instance is the only level with a distance to the paper
    instance = "instance level, closest to the paper"
    assert rows[f"PCMC (contrastive) ({instance})"][1] == ["—"] * 12  # missing run: dashes, never zero
    assert rows["PCMR (non-contrastive) (image level)"][1] == ["—"] * 12
    ours = rows[f"PCMR (non-contrastive) ({instance})"][1]
    assert ours[0] == "60.0" and ours[6] == "80.0"
    styles = [s for s, _, _ in display_rows(sec.tables[0])]
    shown = display_rows(sec.tables[0])
    after = next(k for k, (_, label, _) in enumerate(shown) if label == f"PCMR (non-contrastive) ({instance})")
    delta = next(cells for s, _, cells in shown[after:] if s == "delta")
    assert delta[0] == f"{60.0 - 66.8:+.1f}"  # PCMR I->T r@1: ours 60.0, paper 66.8
    assert "paper-only" in styles  # MILAN / SpeechCLIP rows carry the paper's numbers only
    assert any("data origin not recorded" in p for p in sec.provenance)


def test_synthetic_data_is_flagged_everywhere(tmp_path):
    dirs = ["I->T", "T->I", "I->S", "S->I", "T->S", "S->T"]
    p, report = _record_and_report(
        tmp_path,
        "table1_flickr8k.yaml",
        {n: {d: {"r@1": 10.0, "r@5": 20.0} for d in dirs} for n in ("flickr8k-pcmc-ITS", "flickr8k-pcmr-ITS")},
        overrides=["data.flickr8k.synthetic=true"],
    )
    paths = write_report(report, tmp_path / "out")
    md = paths["markdown"].read_text()
    html = paths["html"].read_text()
    terminal = io.StringIO()
    print_report(report, Console(file=terminal, width=200))
    assert "SYNTHETIC data" in md and "SYNTHETIC data" in html and "SYNTHETIC data" in terminal.getvalue()
    assert "not a reproduction" in md
    # the learning section: trained 10.0 vs untrained 1.0 vs chance 0.5, from the files
    learn = next(s for s in report.sections if s.title.startswith("All runs"))
    cells = display_rows(learn.tables[0])[0][2]
    assert cells == ["10.0", "1.0", "0.5"]
    assert (tmp_path / "out" / "figures").is_dir() and list((tmp_path / "out" / "figures").glob("*.png"))
    assert "data:image/png;base64," in html and "http" not in re.sub(r"https?://www\.w3\.org", "", html)


def test_zeroshot_and_enrichment_tables_read_their_result_files(tmp_path):
    p = load_pipeline(PIPELINES / "table4_zero_shot.yaml", cache_root=str(tmp_path / "cache"))
    d = write_run(
        Path(p.runs_root),
        "cub-pcmc-ITAC-finetuned",
        p.runs["cub-pcmc-ITAC-finetuned"].train.to_dict(),
        {"I->T": {"r@1": 1.0}},
        level="class",
    )
    (d / "zeroshot.json").write_text(json.dumps({"num_classes": 50, "T1": {"I": {"C": 61.25, "P": 30.0}}}))
    table = build_table(p.tables[0], load_runs(Path(p.runs_root)))
    rows = {label: cells for _, label, cells in display_rows(table)}
    assert rows["I"] == ["61.2", "30.0"] or rows["I"] == ["61.3", "30.0"]
    assert rows["I+A"] == ["—", "—"]
    assert rows["chance (1/50 classes)"] == ["2.0", "2.0"]
    assert table.rows[0].cells[0].paper == 67.2


def test_report_cli_errors_are_one_line(tmp_path):
    res = CliRunner().invoke(app, ["report", "--runs-root", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "not found" in res.output and "Traceback" not in res.output


def chromium_console(html_file: Path, tmp_path: Path) -> tuple[list[str], str]:
    """Render a file in headless Chromium -> (console lines, the DOM after scripts ran)."""
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chrome'}",
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
        html_file.resolve().as_uri(),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return [line for line in res.stderr.splitlines() if ":CONSOLE" in line], res.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_html_renders_in_headless_chromium_without_console_errors(tmp_path):
    dirs = ["I->T", "T->I", "I->S", "S->I", "T->S", "S->T"]
    p, report = _record_and_report(
        tmp_path, "table1_flickr8k.yaml", {"flickr8k-pcmr-ITS": {d: {"r@1": 60.0, "r@5": 80.0} for d in dirs}}
    )
    page = tmp_path / "report.html"
    page.write_text(report_html(report))
    console, dom = chromium_console(page, tmp_path)
    assert console == [], console
    assert 'data-ready="1"' in dom  # the page's script ran to its end
    assert dom.count("<table>") >= 2
    # the check itself can fail: a page with a script error is caught
    broken = tmp_path / "broken.html"
    broken.write_text(report_html(report).replace("<script>", "<script>notDefinedAnywhere();"))
    console, _ = chromium_console(broken, tmp_path)
    assert any("notDefinedAnywhere" in line for line in console)


def test_plain_train_runs_say_where_their_data_came_from(tmp_path):
    """No pipeline record: a run records its caches' origin (extraction notes a `pcmpipe synth` root), so the
    report says SYNTHETIC for synthetic data, the dataset's name for real data, and 'not recorded' for old runs."""
    from extraction import extract

    from pcmpipe.config import TrainConfig
    from pcmpipe.datasets.synthetic import SYNTHETIC_MARKER, synth
    from pcmpipe.training.stage2 import train

    root = tmp_path / "flickr8k"
    synth("flickr8k", root, images=6, seed=2)
    tiny = {"image": "clip-tiny-image", "text": "clip-tiny-text"}
    origins = {}
    for origin in ("synthetic", "real"):
        if origin == "real":  # the same files without the marker: a real dataset's layout, as far as anyone can tell
            (root / SYNTHETIC_MARKER).unlink()
        cache_root, runs_root = tmp_path / f"cache-{origin}", tmp_path / f"runs-{origin}"
        extract("flickr8k", root, modalities=["I", "T"], backbones=tiny, weights=dict.fromkeys(tiny, "random:0"),
                cache_root=cache_root, workers=0, batch_size=8)  # fmt: skip
        cfg = {"dataset": "flickr8k", "modalities": ["I", "T"], "epochs": 1, "batch_size": 4, "dim": 16}
        run = train(TrainConfig.from_dict({**cfg, "cache_root": str(cache_root), "runs_root": str(runs_root)}))
        origins[origin] = json.loads((run / "config.json").read_text())["data_origin"]
        [sec] = build_report(runs_root).sections  # the learning section only: no pipeline record
        assert sec.provenance[0] == (
            "flickr8k: SYNTHETIC data (pcmpipe synth): not a reproduction of the paper; root ?"
            if origin == "synthetic"
            else "flickr8k: real flickr8k data; root ?"
        )
    assert origins == {"synthetic": "synthetic", "real": "real"}
    # a run recorded before runs noted their data origin (and before files.json)
    config = run / "config.json"
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "data_origin"}))
    (run / "files.json").unlink()
    assert (
        build_report(tmp_path / "runs-real").sections[0].provenance[0].startswith("flickr8k: data origin not recorded")
    )
