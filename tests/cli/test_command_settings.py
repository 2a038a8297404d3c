"""`run`, `report`, `demo`, `download`, `cache-info` and `backbones` on their schemas (pcmpipe.config.experiments,
pcmpipe.config.commands): a settings file and `--set` give what the same flags give, `run`'s `--set` keeps its
pipeline meaning, and a mistake from a file or `--set` is one line with exit code 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pcmpipe.config.experiments import RunConfig
from tests.settings_cli import as_sets, run_cli, settings_file

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "v1"


@pytest.fixture
def v1(tmp_path, monkeypatch) -> Path:
    """A copy of the v1 cache and its finished run, as the working directory (the run's paths are relative)."""
    shutil.copytree(GOLDEN, tmp_path / "v1")
    monkeypatch.chdir(tmp_path / "v1")
    return tmp_path / "v1"


def test_run_from_a_settings_file_plans_what_the_flags_plan(tmp_path):
    """Roots, cache root, the paper's recipe and the overrides (`epochs=2` for every run, a dotted key for the
    file) from a file: the same plan, printed commands included, as the flags."""
    cache = tmp_path / "c"
    overrides = ["epochs=2", "data.flickr8k.extract.views=2"]
    by_flags = run_cli(
        "run", "table1_flickr8k", "--dry-run", "--root", "/data/f8k", "--cache-root", cache, "--recipe", "paper",
        *[a for o in overrides for a in ("--set", o)],
    )  # fmt: skip
    path = settings_file(
        tmp_path / "run.yaml", dry_run=True, root=["/data/f8k"], cache_root=str(cache), recipe="paper",
        overrides=["epochs=3", *overrides[1:]],
    )  # fmt: skip
    by_file = run_cli("run", "table1_flickr8k", "--config", path, "--set", overrides[0], "--set", overrides[1])
    assert by_file == by_flags
    assert "--epochs 2" in by_flags and "--views 2" in by_flags and "--root /data/f8k" in by_flags
    assert not cache.exists()  # a dry run writes nothing


def test_runs_printed_settings_give_the_same_config_back():
    cfg = RunConfig.from_dict({"pipeline": "table1_flickr8k", "root": ["a", "b"], "overrides": ["epochs=2"]})
    assert cfg.to_cli_args() == ["table1_flickr8k", "--root", "a", "--root", "b", "--set", "epochs=2"]


def test_report_takes_its_folders_from_a_file_and_set(v1):
    run_cli("report", "--runs-root", "cache/runs", "--out", "a")
    path = settings_file(v1 / "report.yaml", runs_root="cache/runs", out="typed")
    run_cli("report", "--config", path, "--set", "out=b")
    assert not (v1 / "typed").exists()
    assert (v1 / "a" / "report.md").read_text() == (v1 / "b" / "report.md").read_text()


def test_cache_info_takes_its_root_from_a_file(v1):
    """The positional root and --verify both from a file: the same table as typed."""
    by_flags = run_cli("cache-info", "cache", "--verify")
    by_file = run_cli("cache-info", "--config", settings_file(v1 / "info.yaml", root="cache", verify=True))
    assert by_file == by_flags and "synth" in by_flags


def test_backbones_tags_off_by_set_equals_no_tags():
    assert run_cli("backbones", "--set", "tags=false") == run_cli("backbones", "--no-tags")


@pytest.mark.parametrize(
    "args, settings, fragment",
    [
        (["download", "flickr8k", "--root", "{tmp}/d"], {"max_unpack_gb": 0}, "--max-unpack-gb must be > 0"),
        (["download", "flickr8k", "--root", "{tmp}/d"], {"max_ratio": 0.5}, "--max-ratio must be >= 1"),
        (["download", "flickr8k", "--root", "{tmp}/d"], {"retry": 3}, "did you mean retries?"),
        (["run", "table1_flickr8k", "--dry-run"], {"recipe": "literal"}, "unknown recipe 'literal'; valid choices"),
        (["run", "table1_flickr8k", "--dry-run"], {"overrides": ["epochs"]}, "--set expects key=value"),
        (["demo"], {"fast": "maybe"}, "setting fast='maybe' has the wrong type"),
        (["report"], {"runs_root": "{tmp}/none"}, "none not found"),
        (["cache-info"], {"verify": "sometimes"}, "setting verify='sometimes' has the wrong type"),
        (["backbones"], {"tag": False}, "did you mean tags?"),
    ],
)
def test_bad_values_from_a_file_or_set_are_one_line(tmp_path, args, settings, fragment):
    settings = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in settings.items()}
    args = [a.format(tmp=tmp_path) for a in args]
    assert fragment in run_cli(*args, "--config", settings_file(tmp_path / "s.yaml", **settings), code=2)
    if args[0] != "run":  # run's --set is the pipeline's overrides, not a setting of its own
        assert fragment in run_cli(*args, *as_sets(settings), code=2)
    assert not (tmp_path / "d").exists() and not (tmp_path / "demo").exists()  # refused before anything was written
