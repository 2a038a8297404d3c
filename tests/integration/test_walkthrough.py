"""The walk-through of docs/using.md, as a new user runs it: a folder of their own images and a captions table
-> dataset.yaml -> features -> a trained run -> search from text in the terminal and from Python.

The test reads the steps from the doc itself (its `yaml`, `bash` and `python` blocks), so the doc and the test
cannot drift apart: the spec is written as the doc shows it, every `pcmpipe` command runs as written in a real
subprocess, and the Python block is executed as it stands. Only the user's data is generated here: random
images and a captions.csv in the documented columns. The backbones are the tiny random-weight CLIP towers.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from user_data import write_image

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "using.md"
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # end to end: every command a real process

ANIMALS = ("dog", "cat", "bird", "horse")
COLOURS = ("brown", "grey", "white", "black")
SPLITS = ("train", "train", "train", "val", "test", "test")  # 12 images: 6 train, 2 val, 4 test


def _walkthrough() -> dict[str, list[str]]:
    """Fenced blocks of the doc's walk-through section, by language."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Walk-through", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, list[str]] = {}
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", section, flags=re.S):
        blocks.setdefault(lang, []).append(body)
    return blocks


def _commands(bash: str) -> list[list[str]]:
    """The `pcmpipe` commands of a bash block, continuation lines joined, as argument lists."""
    joined = bash.replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.strip().startswith("pcmpipe ")]


def _users_folder(root: Path, n_images: int = 12) -> list[dict[str, str]]:
    """What the user brings: img/NNNN.jpg and captions.csv (image_id,caption_id,file,caption,split)."""
    rows = []
    for i in range(n_images):
        write_image(root / "img" / f"{i:04d}.jpg", i)
        animal, colour = ANIMALS[i % len(ANIMALS)], COLOURS[(i // len(ANIMALS)) % len(COLOURS)]
        for j, text in enumerate((f"a {colour} {animal} on the grass", f"a {animal} lying in a garden")):
            rows.append(
                {
                    "image_id": f"{i:04d}",
                    "caption_id": f"{i:04d}#{j}",
                    "file": f"img/{i:04d}.jpg",
                    "caption": text,
                    "split": SPLITS[i % len(SPLITS)],
                }
            )
    with open(root / "captions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _pcmpipe(cwd: Path, args: list[str]) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pcmpipe", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"pcmpipe {shlex.join(args)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


def test_from_a_folder_of_your_images_and_captions_to_search(tmp_path, monkeypatch):
    blocks = _walkthrough()
    (spec,) = blocks["yaml"]
    (bash,) = blocks["bash"]
    (python,) = blocks["python"]
    data = tmp_path / "data" / "pets"
    rows = _users_folder(data)
    (data / "dataset.yaml").write_text(spec, encoding="utf-8")

    commands = [c[1:] for c in _commands(bash)]
    assert [c[0] for c in commands] == ["extract", "train", "search", "search"], commands
    outputs = [_pcmpipe(tmp_path, args) for args in commands]
    table, as_json = outputs[2], outputs[3]
    hits = json.loads(as_json)
    test_images = {r["image_id"] for r in rows if r["split"] == "test"}
    assert len(hits) == 3 and {h["id"] for h in hits} <= test_images, hits
    assert all(h["id"] in table for h in hits)

    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(python, str(DOC), "exec"), namespace)  # the doc's Python block, as a user pastes it
    assert [i for i, _ in namespace["hits"]] == [h["id"] for h in hits]
    assert [s for _, s in namespace["hits"]] == pytest.approx([h["score"] for h in hits], abs=1e-5)
    train_images = namespace["train_images"]
    assert sorted(train_images.column("id").to_pylist()) == sorted(
        {r["image_id"] for r in rows if r["split"] == "train"}
    )
    assert train_images.column_names == ["id", "image_id", "features"]
