"""The declared open_clip floor is one whose code paths pcmpipe uses; below it, one line names the version.

.ci/run also runs tests/backbones with exactly the floor version first on the path (PCMPIPE_OPEN_CLIP_FLOOR set to
it), so these checks and the backbone tests run against the oldest open_clip pyproject.toml allows."""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path

import open_clip
import pytest
import tomllib

from pcmpipe.backbones.open_clip_floor import OPEN_CLIP_FLOOR, require_open_clip, version_tuple
from pcmpipe.errors import UserError

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_pyproject_declares_the_floor_the_code_checks():
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if d.startswith("open_clip_torch")]
    assert re.fullmatch(r"open_clip_torch>=(\S+)", spec).group(1) == OPEN_CLIP_FLOOR


def test_an_older_open_clip_gets_one_line_naming_the_version():
    with pytest.raises(UserError, match=rf"needs open_clip_torch >= {re.escape(OPEN_CLIP_FLOOR)} \(found 3\.0\.0\)"):
        require_open_clip("3.0.0")
    for ok in (OPEN_CLIP_FLOOR, "3.3.0", "10.0.0.dev1"):
        require_open_clip(ok)
    assert version_tuple("3.2.0+cpu") == (3, 2, 0)


def test_the_installed_open_clip_has_what_pcmpipe_calls():
    require_open_clip()
    assert version_tuple(open_clip.__version__) >= version_tuple(OPEN_CLIP_FLOOR)
    from open_clip.transformer import text_global_pool

    assert "eos_token_id" in inspect.signature(text_global_pool).parameters
    # the paper's tower is QuickGELU: the published config must say so, or a plain-GELU tower gets its weights
    assert open_clip.get_pretrained_cfg("ViT-B-32", "openai")["quick_gelu"] is True


@pytest.mark.skipif(not os.environ.get("PCMPIPE_OPEN_CLIP_FLOOR"), reason="only in .ci/run's floor pass")
def test_the_floor_pass_really_imports_the_floor_version():
    assert open_clip.__version__ == os.environ["PCMPIPE_OPEN_CLIP_FLOOR"] == OPEN_CLIP_FLOOR
