"""Stage one: frozen backbones over a dataset's records into the feature cache.

`sources` turns records into decoded, batched inputs; `batching` plans length-sorted batches; `runner` drives
reader -> backbone -> `ShardWriter` per (modality, split), resumably; `summary` is what a run returns; `plan`
answers whether a split is already cached (`plan_split`, also asked by the pipelines planner).
"""

from pcmpipe.extract.plan import SplitPlan, plan_split
from pcmpipe.extract.runner import FEATURE, default_workers, extract

__all__ = ["extract", "default_workers", "FEATURE", "plan_split", "SplitPlan"]
