"""What a fresh interpreter has loaded after importing some pcmpipe modules: the check that a light module
stays free of heavy libraries (torch, open_clip, transformers), whatever this test process imported before."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def loaded_after(modules: str, watched: tuple[str, ...]) -> list[str]:
    """The `watched` top-level modules in sys.modules after `import <modules>` in a new interpreter, sorted."""
    code = (
        f"import json, sys\nimport {modules}\nprint(json.dumps(sorted(m for m in {watched!r} if m in sys.modules)))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout)
