"""`embed`, `search` and `export` on their schemas (pcmpipe.config.use): a settings file and `--set` give what the
same flags give, and a mistake in either is one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pcmpipe.cache import open_cache
from pcmpipe.config.use import EmbedConfig, SearchConfig
from tests.settings_cli import as_sets, run_cli, settings_file

pytestmark = pytest.mark.usefixtures("one_thread")


def _embedded(out: Path) -> tuple[list[str], np.ndarray, int]:
    reader = open_cache(out)
    cols, feats = reader.read(["embedding"])
    return list(cols["id"]), feats["embedding"], len(list(out.glob("*.parquet")))


def test_embed_from_a_settings_file_and_set_equals_the_flags(trained, tmp_path):
    """The file gives the texts and float16 (and 50 rows a shard, which --set's 1 overrides): the same rows,
    values, precision and shards as the flags."""
    run, texts = trained["run"], ["a dog runs", "two cats", "a red car"]
    flags = [a for t in texts for a in ("--text", t)]
    run_cli(
        "embed", run, "--modality", "T", "--out", tmp_path / "a", *flags, "--dtype", "float16", "--rows-per-shard", "1"
    )
    path = settings_file(tmp_path / "embed.yaml", text=texts, dtype="float16", rows_per_shard=50)
    run_cli("embed", run, "--modality", "T", "--out", tmp_path / "b", "--config", path, "--set", "rows_per_shard=1")
    (ids_a, emb_a, shards_a), (ids_b, emb_b, shards_b) = _embedded(tmp_path / "a"), _embedded(tmp_path / "b")
    assert ids_a == ids_b and len(ids_a) == 3 and shards_a == shards_b == 3
    assert emb_a.dtype == emb_b.dtype == np.float16 and np.array_equal(emb_a, emb_b)


def test_search_from_a_settings_file_and_set_equals_the_flags(trained, tmp_path):
    run = trained["run"]
    row = json.loads((run / "embeddings" / "T.json").read_text())["columns"]["id"][0]
    by_flags = run_cli("search", run, "--query-id", row, "--from", "T", "--to", "I", "-k", 2, "--json")
    path = settings_file(tmp_path / "search.yaml", query_id=row, as_json=True, k=1)  # --set k=2 wins over the file
    by_file = run_cli("search", run, "--from", "T", "--to", "I", "--config", path, "--set", "k=2")
    assert json.loads(by_file) == json.loads(by_flags) and len(json.loads(by_flags)) == 2  # the test split's 2


def test_export_takes_its_folder_from_set(trained, tmp_path):
    """`--set` wins over what is typed, the positional folder included (defaults < file < flags < --set)."""
    run_cli("export", trained["run"], tmp_path / "a")
    run_cli("export", trained["run"], tmp_path / "typed", "--set", f"out={tmp_path / 'b'}")
    assert not (tmp_path / "typed").exists()
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


@pytest.mark.parametrize(
    "args, settings, fragment",
    [
        (["embed", "--modality", "T", "--text", "x"], {"dtype": "int8"}, "unknown --dtype 'int8'; valid choices"),
        (["embed", "--modality", "T", "--text", "x"], {"batch_size": 0}, "--batch-size must be between 1 and 4096"),
        (["embed", "--modality", "T"], {"text": ["x"], "cache": "c"}, "pass exactly one kind of input"),
        (["embed", "--modality", "T", "--text", "x"], {"txt": ["y"]}, "unknown embed setting txt; did you mean text?"),
        (["search", "--from", "T", "--to", "I", "--query", "x"], {"k": 0}, "-k must be at least 1, got 0"),
        (["search", "--from", "T", "--to", "I"], {}, "pass one of --query (text or file) or --query-id"),
        (["search", "--from", "T", "--to", "I", "--query", "x"], {"from": "T"}, "did you mean from_?"),
        (["export"], {"outt": "x"}, "unknown export setting outt; did you mean out?"),
    ],
    ids=["dtype", "batch", "inputs", "typo", "k", "query", "keyword", "export"],
)
@pytest.mark.parametrize("source", ["config", "set"])
def test_a_mistake_in_a_file_or_set_is_one_line(trained, tmp_path, args, settings, fragment, source):
    command, *rest = args
    given = ["--config", settings_file(tmp_path / "s.yaml", **settings)] if source == "config" else as_sets(settings)
    out = [tmp_path / "e"] if command == "export" else ["--out", tmp_path / "e"] if command == "embed" else []
    line = run_cli(command, trained["run"], *out, *rest, *given, code=2)
    assert fragment in line, line
    assert not (tmp_path / "e").exists()


def test_printed_arguments_give_the_settings_back():
    """to_cli_args: repeated settings come back as repeated arguments and flags, `from_` as --from."""
    embed = EmbedConfig.from_dict(
        {"run_dir": "r", "inputs": ["a.jpg", "b.jpg"], "modality": "I", "out": "o", "dtype": "float16"}
    )
    assert embed.to_cli_args() == ["r", "a.jpg", "b.jpg", "--modality", "I", "--out", "o", "--dtype", "float16"]
    texts = embed.replace(inputs=[], text=["x y", "z"]).to_cli_args()
    assert texts == ["r", "--modality", "I", "--out", "o", "--text", "x y", "--text", "z", "--dtype", "float16"]
    search = SearchConfig.from_dict({"run_dir": "r", "query": "q", "from_": "T", "to": "I", "k": 3, "as_json": True})
    assert search.to_cli_args() == ["r", "--query", "q", "--from", "T", "--to", "I", "--k", "3", "--json"]
