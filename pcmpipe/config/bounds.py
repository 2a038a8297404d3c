"""Upper bounds of the training settings that size memory, processes or output, checked when a config is built.

A config is checked before any work starts (the CLI builds it first), so `--batch-size 10000000` or
`shuffle_buffer: 1e12` stops in one line instead of filling the machine's memory an hour into a run, when the
kernel's OOM killer may end other people's jobs too. Each message names the limit and where it comes from
(pcmpipe.limits: this machine's cores and memory, or the file format). Only settings the user gave are checked:
a default is sane by construction, and a recorded run's settings are never validated again on another machine.
The memory bounds are estimates of the largest allocation a setting makes; they stop typos and runaway values,
not a run that is merely tight.
"""

from __future__ import annotations

from typing import Any

from pcmpipe import limits
from pcmpipe.errors import UserError

# metrics.jsonl, and the checkpoint's JSON metadata (capped at 100 MB by safetensors), hold one record per epoch
# (~1-2 KB with every direction's validation scores), and both are rewritten at the end of every epoch
MAX_EPOCHS = 10_000
# The loss holds, per pair of modalities, B x B float32 logits, their softmax and both gradients: 16 bytes a pair
LOSS_BYTES_PER_ENTRY = 16
# The widest cached row of the paper's backbones: HuBERT-Base's 13 x 768 layer means in float32 (an embedding
# pass holds the row and its standardised copy; a streamed shuffle window holds the row)
WIDEST_ROW_BYTES = 13 * 768 * 4
# One tower input in an embedding pass without gradients: a 224 x 224 float32 image (0.6 MiB) and ViT-B/32's
# largest activations beside it, about 2 MiB a row (text rows are far smaller)
TOWER_ROW_BYTES = 2 << 20


def check_sizes(cfg: Any) -> None:
    """Raise ValueError (pydantic turns it into the one-line message) for a setting of `cfg` (a Settings) the
    user gave that is beyond what this machine or the run's files can hold; messages name its flag."""
    given = cfg.model_fields_set
    flag = cfg.flag_of

    try:
        if "epochs" in given:
            limits.check_int(flag("epochs"), cfg.epochs, low=1, high=MAX_EPOCHS, why=_EPOCHS_WHY)
        if "num_workers" in given:
            limits.check_workers(flag("num_workers"), cfg.num_workers)
        if cfg.batch_size is not None and "batch_size" in given:
            pairs = len(cfg.modalities) * (len(cfg.modalities) - 1) // 2
            need = LOSS_BYTES_PER_ENTRY * cfg.batch_size**2 * max(1, pairs)
            what = f"the loss's batch x batch matrices ({pairs} modality pair{'s' * (pairs != 1)})"
            limits.check_memory(flag("batch_size"), need, what)
        if "eval_batch" in given:
            need = 2 * WIDEST_ROW_BYTES * cfg.eval_batch
            limits.check_memory(flag("eval_batch"), need, "one embedding pass over that many rows")
        if "shuffle_buffer" in given:
            limits.check_memory(flag("shuffle_buffer"), WIDEST_ROW_BYTES * cfg.shuffle_buffer, "the shuffle window")
        for name in ("memory_budget_mb", "stream_val_mb"):
            if name in given and getattr(cfg, name) is not None:
                within_memory(flag(name), getattr(cfg, name))
        if "encode_batch" in given:
            need = TOWER_ROW_BYTES * cfg.encode_batch
            limits.check_memory(flag("encode_batch"), need, "one tower pass over that many rows")
    except UserError as e:
        raise ValueError(str(e)) from None


_EPOCHS_WHY = "metrics.jsonl and the checkpoint keep one record per epoch and are rewritten at every epoch"


def within_memory(flag: str, mib: float) -> None:
    """A size in MiB the run would hold in memory: at most this machine's memory."""
    total = limits.memory_bytes() / 2**20
    if mib > total:
        raise UserError(
            f"{flag} must be at most {total:,.0f} (MiB: this machine's memory, or its cgroup limit), got {mib:g}"
        )
