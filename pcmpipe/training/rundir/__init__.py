"""The one owner of a run directory: its files and their formats, the claim -> lock -> finish protocol both
recipes follow, and the config record (docs/run-directory.md states the contract).

- `files`: the file names and the JSON files, read strictly (one line naming a damaged file) or tolerantly
  (the report's: a problem noted and a missing value); no torch.
- `tensors`: heads.safetensors and embeddings/<m>.safetensors + .json.
- `manifest`: files.json, the sha256 of every file of a finished run, compared by every strict reader.
- `record`: config.json (`RunRecord`, written by `record_config`) and an export's (`ExportRecord`).
- `protocol`: `run_lock`, `claim` (fresh | resume | done), `start_fresh` / `start_resume`, `finish` / `finalise`.

runs/, report/ and pipelines/ read runs only through this package. Its names are also importable from the
package itself (`from pcmpipe.training import rundir; rundir.claim(...)`); each is loaded on first use, so a
caller that needs only the file names or the config record (the CLI, before its heavy imports) never imports
torch. Inside pcmpipe, modules import the module they need (`from pcmpipe.training.rundir.protocol import
claim`), which type checkers follow.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "files": (
        "COMPLETE_MARKER CONFIG HEADS MAX_RUN_FILE METRICS UNTRAINED is_complete is_run_folder read_json "
        "read_metrics read_object read_tolerant result_ok write_json write_metrics"
    ),
    "manifest": "FILES read_manifest verify write_manifest",
    "protocol": (
        "CHECKPOINT LEGACY_CHECKPOINT Claim claim final_dir finalise finish remove_tree run_lock start_fresh "
        "start_resume temp_dir"
    ),
    "record": (
        "EXPORT_KIND EmbeddingRows ExportRecord LiveTower RecordedCache RecordedSettings RunRecord modalities_of "
        "read_record record_config run_config run_record settings_of software_versions"
    ),
    "tensors": "load_embeddings load_modality_embeddings load_heads save_embeddings save_heads",
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names.split()}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """A name of one of the package's modules, importing that module on first use (PEP 562)."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
