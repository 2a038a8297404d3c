"""Other libraries' chatter kept out of pcmpipe's output unless `pcmpipe --verbose`.

transformers prints a "Loading weights" progress bar each time a model is read from a folder, huggingface_hub
and tqdm print download and shard bars, and libraries log warnings through `logging` and `warnings`. None of
that is pcmpipe's answer (a `search` printed the bar into its result table), so every command starts quiet:
the environment variables these libraries read at import time are set (unless the user set them), their
loggers drop below ERROR, their bars are switched off where they are already imported, and warnings raised
outside pcmpipe are ignored. `--verbose` leaves all of it as the libraries have it.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# read when the library is imported (huggingface_hub's and tqdm's bars, transformers' own logging)
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}
LOGGERS = ("transformers", "huggingface_hub", "sentence_transformers", "open_clip", "timm", "datasets", "torch")
_set_here: set[str] = set()  # variables this module set, so a later --verbose in the same process undoes them


def quiet_third_party(verbose: bool = False) -> None:
    """Quiet other libraries for this process (module docstring); `verbose` restores what was changed here."""
    if verbose:
        for name in _set_here:
            os.environ.pop(name, None)
        _set_here.clear()
        _bars(enabled=True)
        return
    for name, value in QUIET_ENV.items():
        if name not in os.environ:
            os.environ[name] = value
            _set_here.add(name)
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"pcmpipe(\.|$)")  # pcmpipe's own warnings still show
    _bars(enabled=False)


def _bars(enabled: bool) -> None:
    """Switch the bars of libraries already imported (the environment only reaches later imports)."""
    hub = sys.modules.get("huggingface_hub.utils")
    if hub is not None:
        (hub.enable_progress_bars if enabled else hub.disable_progress_bars)()
    tf = sys.modules.get("transformers.utils.logging")
    if tf is not None:
        (tf.enable_progress_bar if enabled else tf.disable_progress_bar)()
        if not enabled:
            tf.set_verbosity_error()
