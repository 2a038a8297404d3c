"""Training samples: the join of a split's cached modalities by their id columns (docs/design.md "Training
samples"), in memory or streamed from the cache.

- `table.py`: the sample table, by the one join rule (hashed keys, `KeyIndex`), `find_base`;
- `views.py`: the one rule that draws each sample's augmented view per epoch;
- `moments.py`: the one per-modality moments function (`standardize: center | scale`);
- `split.py`: `TrainingSplit`, what the trainer asks of either mode;
- `memory.py`: `SplitData`, `join`, `load_split` (features held whole); `stream.py`: `StreamedSplit` (read window
  by window; `rowstore.py` its looked-up modalities, `window.py` its windows); `mode.py`: which one a run uses;
- `modality.py`: one cached modality (`ModalityData`, `CacheInfo`); `caches.py`: finding, checking and loading
  a split's caches.
"""

from pcmpipe.samples.caches import check_compatible, check_same_backbone, load_modality, peek_split
from pcmpipe.samples.memory import SplitData, join, load_split
from pcmpipe.samples.modality import CacheInfo, FeatureStream, ModalityData, SplitInfo, feature_name
from pcmpipe.samples.mode import load_training, resolve_stream
from pcmpipe.samples.moments import moments, standardisation
from pcmpipe.samples.split import Batches, TrainingSplit
from pcmpipe.samples.stream import StreamedSplit
from pcmpipe.samples.table import KeyIndex, find_base, hash_keys
from pcmpipe.samples.views import draw_views

__all__ = [
    "Batches",
    "CacheInfo",
    "FeatureStream",
    "KeyIndex",
    "ModalityData",
    "SplitData",
    "SplitInfo",
    "StreamedSplit",
    "TrainingSplit",
    "check_compatible",
    "check_same_backbone",
    "draw_views",
    "feature_name",
    "find_base",
    "hash_keys",
    "join",
    "load_modality",
    "load_split",
    "load_training",
    "moments",
    "peek_split",
    "resolve_stream",
    "standardisation",
]
