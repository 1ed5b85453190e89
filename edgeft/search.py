"""Hyper-parameter search over the FP32 fine-tuning: a grid, or N random points of it.

``--search lr=1e-5,5e-5,1e-4 --search batch_size=16,32`` makes a 3x2 grid; ``--search-trials 4``
trains 4 of its points drawn with the run's seed. Every trial is recorded; the best by the validation
metric (``train.best_metric``) goes on through the pipeline.
"""
from __future__ import annotations

import itertools
import random
from typing import Any

SEARCHABLE = {"lr": float, "batch_size": int, "epochs": float, "weight_decay": float}


def parse(specs: list[str]) -> dict[str, list[Any]]:
    """``["lr=1e-5,5e-5", "batch_size=16,32"]`` -> ``{"lr": [1e-5, 5e-5], "batch_size": [16, 32]}``."""
    out: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in SEARCHABLE or not values.strip():
            raise ValueError(f"--search {spec!r}: expected NAME=V1,V2,... with NAME one of {sorted(SEARCHABLE)}")
        try:
            out[key] = [SEARCHABLE[key](v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--search {spec!r}: values of {key} must be {SEARCHABLE[key].__name__}s") from None
    return out


def trials(train_cfg, space: dict[str, list[Any]] | None, n_trials: int | None, seed: int) -> list[dict[str, Any]]:
    """The list of overrides to train; ``[{}]`` (one run with the config as is) without a search."""
    if not space:
        return [{}]
    keys = sorted(space)
    grid = [{k: SEARCHABLE[k](v) for k, v in zip(keys, values)}
            for values in itertools.product(*(space[k] for k in keys))]
    if n_trials and n_trials < len(grid):
        grid = random.Random(seed).sample(grid, n_trials)
    return grid


def better(score: float, best: float, metric: str) -> bool:
    return score < best if metric.removeprefix("validation_") in ("loss", "rmse") else score > best
