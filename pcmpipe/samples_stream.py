"""The import path docs before `pcmpipe.samples` became a package named for streamed training samples; kept for
users' code. The samples live in `pcmpipe.samples` (streamed: `pcmpipe.samples.stream`)."""

from pcmpipe.samples.mode import load_training, resolve_stream
from pcmpipe.samples.stream import StreamedSplit

__all__ = ["StreamedSplit", "load_training", "resolve_stream"]
