"""What the evaluations compute on: one modality's embeddings with the id columns that say what each row is.

It lives here, below training/, because evaluation reads runs but never trains: training/rundir/ writes and
loads these, zero-shot and enrichment only take them as data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class RunEmbeddings:
    """Embeddings of one modality's rows (a run's test split), as a run stores them."""

    embedding: torch.Tensor  # [N, dim] raw head outputs (not normalised)
    key: str
    columns: dict[str, np.ndarray]  # "id" + link columns, each [N]
