"""Feature cache: the contract between stage one (extraction) and stage two (training, evaluation).

One directory per (dataset, modality, split) holds shard files (`part-00000.parquet` or `.h5`) and a hidden
`.manifest.json` (see docs/cache-format.md). Modules: `layout` (the tree; the only code that joins its paths),
`shard` (one file's encoding and checksums), `manifest` (what a cache records and its fingerprint), `writer`
(`ShardWriter`, resumable), `reader` (`open_cache`, `read_manifest`, verified reads), `importer` (a user's own
vectors as a modality).
"""

from pcmpipe.cache.layout import cache_dir, cached_datasets, cached_modalities, runs_root
from pcmpipe.cache.manifest import merge_manifests
from pcmpipe.cache.reader import CacheReader, list_caches, open_cache, read_manifest
from pcmpipe.cache.shard import FORMATS
from pcmpipe.cache.writer import ShardWriter, cache_fingerprint

__all__ = [
    "cache_dir",
    "cache_fingerprint",
    "ShardWriter",
    "open_cache",
    "CacheReader",
    "merge_manifests",
    "list_caches",
    "FORMATS",
    "cached_datasets",
    "cached_modalities",
    "read_manifest",
    "runs_root",
]
