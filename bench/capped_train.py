"""train.py with this process's GPU memory capped, as on an A100/H100 of 80 GB:

    accelerate launch [...] bench/capped_train.py 80 --config configs/train.yaml

The cap (GiB) goes to torch.cuda.set_per_process_memory_fraction before train.py's first
allocation, so an H200 (141 GB) fails exactly where an 80 GB GPU would.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train  # noqa: E402

from diffhdr.cli import run  # noqa: E402

if __name__ == "__main__":
    gib = float(sys.argv[1])
    if torch.cuda.is_available():
        gpu = int(os.environ.get("LOCAL_RANK", "0"))
        total = torch.cuda.get_device_properties(gpu).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, gib * 2**30 / total), gpu)
    run(train.main, sys.argv[2:])
