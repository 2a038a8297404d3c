"""The oldest open_clip pcmpipe runs on, checked before a CLIP tower is built.

3.1.0 is the first release whose `open_clip.transformer.text_global_pool` takes `eos_token_id`, which the text
path passes (pcmpipe.backbones.clip.encode_text_trimmed): older releases raise a TypeError on the first caption.
From 3.1.0 on, the `openai` ViT-B/32 entry carries `quick_gelu=True` (before 2.29 it did not, and a plain-GELU
tower would load QuickGELU weights silently). pyproject.toml declares the same floor; .ci/run installs exactly
this version beside the current one and runs tests/backbones against it.
"""

from __future__ import annotations

import re

from pcmpipe.errors import UserError

OPEN_CLIP_FLOOR = "3.1.0"


def version_tuple(version: str) -> tuple[int, ...]:
    """'3.1.0' -> (3, 1, 0); '3.2.0.dev1' -> (3, 2, 0): the release numbers only."""
    return tuple(int(p) for p in re.findall(r"\d+", version.split("+")[0])[:3])


def require_open_clip(version: str | None = None) -> None:
    """Raise one UserError line when open_clip (or `version`) is older than the floor."""
    if version is None:
        import open_clip

        version = str(getattr(open_clip, "__version__", "0"))
    if version_tuple(version) < version_tuple(OPEN_CLIP_FLOOR):
        raise UserError(
            f"pcmpipe needs open_clip_torch >= {OPEN_CLIP_FLOOR} (found {version}): "
            f"pip install 'open_clip_torch>={OPEN_CLIP_FLOOR}'"
        )
