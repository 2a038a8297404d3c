"""Where a backbone's weights come from, and the checksum that ties cached features to them.

A weights spec is one string, the value of `--weights-image/--weights-text/--weights-audio`:

    default          the backbone's published weights (CLIP: open_clip tag `openai`; HuBERT: facebook/hubert-base-ls960)
    openai           an open_clip pretrained tag (CLIP backbones only; any tag open_clip knows for the architecture)
    hf:ORG/NAME      a Hugging Face model id (HuBERT backbones only)
    random[:SEED]    seeded random initialisation (seed 0 by default): fast tests, throughput, ablations
    PATH             a local checkpoint: a CLIP state-dict / checkpoint file, or a HuBERT save_pretrained directory

The checksum recorded in the cache fingerprint is the sha256 of the tower's own tensors (name, dtype, shape
and bytes, names sorted), so two caches agree exactly when the weights that produced them agree, whatever
file or tag they were loaded from.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import torch

from pcmpipe.checksums import state_sha256 as state_sha256  # re-exported: its public path
from pcmpipe.errors import UserError


@dataclass(frozen=True)
class WeightsSpec:
    """A parsed weights string. kind: 'default' | 'tag' | 'hub' | 'random' | 'path'."""

    kind: str
    value: str = ""  # tag name, hub id or path (as given)
    seed: int = 0  # only for kind == 'random'

    @property
    def label(self) -> str:
        """What goes into the cache meta. Paths are not recorded: the checksum identifies the weights."""
        if self.kind == "random":
            return f"random:{self.seed}"
        if self.kind == "path":
            return "checkpoint"
        if self.kind == "hub":
            return f"hf:{self.value}"
        return self.value or self.kind


def parse_weights(spec: str | None) -> WeightsSpec:
    """'default' | TAG | 'hf:ORG/NAME' | 'random[:SEED]' | PATH -> WeightsSpec (UserError if malformed).

    A string is a PATH when it contains a path separator or names an existing file or directory; a
    missing path is an error here, not a silent fallback to a tag.
    """
    spec = (spec or "default").strip()
    if spec in ("", "default"):
        return WeightsSpec("default")
    if spec == "random" or spec.startswith("random:"):
        seed_text = spec.partition(":")[2] or "0"
        try:
            seed = int(seed_text)
        except ValueError:
            raise UserError(f"weights {spec!r}: the seed after 'random:' must be an integer, e.g. random:1") from None
        return WeightsSpec("random", seed=seed)
    if spec.startswith("hf:"):
        if spec.count("/") != 1 or len(spec) < 6:
            raise UserError(f"weights {spec!r}: expected hf:ORG/NAME, e.g. hf:facebook/hubert-base-ls960")
        return WeightsSpec("hub", value=spec[3:])
    path = Path(spec).expanduser()
    if path.exists():
        return WeightsSpec("path", value=str(path.resolve()))
    if "/" in spec or "\\" in spec or spec.startswith("."):
        raise UserError(f"weights path {spec} does not exist; pass an existing checkpoint, 'default' or 'random'")
    return WeightsSpec("tag", value=spec)


T = TypeVar("T")
PROBE_TIMEOUT_S = 2.5


def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be used right now (HF_HUB_OFFLINE, no connection), or None if it can.

    One TCP connect with a short timeout, in a daemon thread so that a resolver that hangs cannot hold us:
    without it, an offline machine spends about a minute in the hub client's retries before failing.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy or constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    reached: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
            reached.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT_S + 0.5)
    return None if reached else f"{host}:{port} is not reachable"


@contextlib.contextmanager
def hub_cache_only() -> Iterator[None]:
    """Make every hub lookup (open_clip's and transformers') answer from the local cache, at once."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def fetch_published(what: str, fetch: Callable[[], T]) -> T:
    """Run `fetch` (a download of published weights through the hub); offline, only the local cache is tried,
    and a miss is one UserError line, in seconds, saying how to supply the weights instead."""
    reason = hub_unreachable()
    if reason is None:
        return fetch()
    with hub_cache_only():
        try:
            return fetch()
        except Exception:
            pass
    raise UserError(
        f"cannot fetch the {what} weights: {reason} and they are not in the local Hugging Face cache; "
        "pass a local checkpoint PATH or random:SEED, or go online (with HF_HUB_OFFLINE unset) once "
        "to cache them"
    )


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a random initialisation under `seed` without disturbing the caller's global RNG streams."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
