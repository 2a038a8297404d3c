"""`pcmpipe search` as a fresh process: arguments are checked before torch is imported, a search from a stored
row (`--query-id`) builds no backbone, and other libraries' progress bars stay out of the output unless
`pcmpipe --verbose`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TERM": "dumb"}


def _pcmpipe(*args, importtime: bool = False) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run the CLI in a new interpreter -> (the process, the modules it imported when `importtime`)."""
    flags = ["-X", "importtime"] if importtime else []
    cmd = [sys.executable, *flags, "-m", "pcmpipe", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    modules = {ln.split("|")[-1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")}
    proc.stderr = "\n".join(ln for ln in proc.stderr.splitlines() if not ln.startswith("import time:"))
    return proc, modules


def _query(run: Path) -> str:
    return json.loads((run / "embeddings" / "T.json").read_text())["columns"]["id"][0]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--from", "T", "--to", "Q"], "--to Q: run walk has no modality 'Q'; it has I, T"),
        (["--from", "X", "--to", "I"], "--from X: run walk has no modality 'X'"),
        (["--from", "T", "--to", "I", "-k", "0"], "-k must be at least 1, got 0"),
        (["--from", "T", "--to", "I", "--gallery", "emb/nope.index"], "emb/nope.index does not exist"),
        (["--from", "T", "--to", "I", "--set", "k=0"], "-k must be at least 1, got 0"),
    ],
    ids=["to", "from", "k", "gallery", "set"],
)
def test_search_checks_its_arguments_before_importing_torch(trained, args, fragment):
    run = trained["run"]
    proc, modules = _pcmpipe("search", run, "--query-id", _query(run), *args, importtime=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and fragment in lines[0], proc.stderr
    assert "torch" not in modules and "faiss" not in modules


@pytest.mark.slow  # a `pcmpipe search` process under -X importtime
def test_search_from_a_stored_row_builds_no_backbone(trained):
    run = trained["run"]
    proc, modules = _pcmpipe("search", run, "--query-id", _query(run), "--from", "T", "--to", "I", importtime=True)
    assert proc.returncode == 0, proc.stderr
    # the backbone registry (pcmpipe.backbones, torch-free) may be read; nothing that builds a backbone is loaded
    builders = {"pcmpipe.backbones.factory", "pcmpipe.backbones.clip", "pcmpipe.backbones.hubert"}
    assert not {"open_clip", "transformers", "pcmpipe.runs.loaded", *builders} & modules
    assert "searched the I embeddings of the test split stored in walk" in proc.stdout
    assert proc.stderr == ""


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory) -> Path:
    """A run whose T modality comes from a transformers text encoder saved to a folder: building it prints
    transformers' "Loading weights" bar."""
    import torch
    from extraction import extract
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from pcmpipe.config import TrainConfig
    from pcmpipe.datasets.synthetic import synth
    from pcmpipe.training.stage2 import train

    root = tmp_path_factory.mktemp("hf")
    words = sorted(set("a dog runs on the beach two cats red car sea sun".split()))
    bert = root / "bert"
    bert.mkdir()
    (bert / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    cfg = BertConfig(vocab_size=len(words) + 5, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(bert)
    BertTokenizerFast(vocab_file=str(bert / "vocab.txt")).save_pretrained(bert)
    synth("flickr8k", root / "data", images=12, seed=3)
    backbones = {"image": "clip-tiny-image", "text": f"hf-text:{bert}"}
    weights = {"image": "random:0", "text": "default"}  # the folder's weights: read with from_pretrained
    extract("flickr8k", root / "data", modalities=["I", "T"], backbones=backbones, weights=weights, device="cpu",
            workers=0, cache_root=root / "cache")  # fmt: skip
    cfg = dict(dataset="flickr8k", modalities="I,T", cache_root=str(root / "cache"), runs_root=str(root / "runs"),
               epochs=1, batch_size=8, dim=16, progress=False, name="hf", device="cpu")  # fmt: skip
    return Path(train(TrainConfig.from_dict(cfg)))


@pytest.mark.slow  # two fresh interpreters that each build a transformers model
def test_no_third_party_progress_bar_unless_verbose(hf_run):
    args = ["search", hf_run, "--query", "a dog", "--from", "T", "--to", "I", "-k", "1", "--json"]
    quiet, _ = _pcmpipe(*args)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "" and len(json.loads(quiet.stdout)) == 1
    verbose, _ = _pcmpipe("--verbose", *args)
    assert verbose.returncode == 0 and "Loading weights" in verbose.stderr, verbose.stderr
    assert json.loads(verbose.stdout) == json.loads(quiet.stdout)
