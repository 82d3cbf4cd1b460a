"""Silence import-time noise from third-party libraries that says nothing to a knowcomp user.

torchao logs one line per optional CUDA kernel library it cannot load on a CPU-only machine, and
torch's pytree module warns about enum registration; neither affects results.
"""

import logging
import os

for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
