"""Stage one: frozen backbones over a dataset's records into the feature cache.

`sources` turns records into decoded, batched inputs; `batching` plans length-sorted batches; `runner` drives
reader -> backbone -> `ShardWriter` per (modality, split), resumably; `summary` is what a run returns.
"""

from pcmpipe.extract.runner import FEATURE, default_workers, extract

__all__ = ["extract", "default_workers", "FEATURE"]
