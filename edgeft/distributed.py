"""Multi-process awareness for `torchrun` / `accelerate launch` (DDP). Trainer does the distributed
training itself; edgeft only makes sure that every rank computes and only rank 0 writes the run."""
from __future__ import annotations

import os


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0
