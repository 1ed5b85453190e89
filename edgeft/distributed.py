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


def check_devices() -> None:
    """Fail early, with the fix, where DDP cannot work: more ranks on this node than visible GPUs (NCCL
    needs one GPU per process; two ranks on one GPU end in an opaque 'NCCL error ... invalid usage')."""
    if world_size() == 1:
        return
    import torch

    from edgeft.errors import ConfigError

    if not torch.cuda.is_available():
        return                                  # CPU ranks: gloo, any number
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))
    gpus = torch.cuda.device_count()
    if local > gpus:
        raise ConfigError(
            f"{local} training processes on this machine but {gpus} GPU(s) visible: DDP on GPUs needs one GPU "
            "per process",
            fix=f"launch with --nproc_per_node {gpus}, or set CUDA_VISIBLE_DEVICES='' to train the {local} "
                "ranks on CPU (gloo)")
