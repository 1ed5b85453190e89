"""Timing an open engine session: random inputs of exactly the given shapes, percentiles over runs.
A leaf module (numpy only): backends and the device runtime both use it."""
from __future__ import annotations

import time

import numpy as np


def time_session(sess, shapes: dict[str, list[int]], warmup: int, iters: int) -> dict:
    """p50/p90/p99/mean over ``iters`` runs of an open session on inputs of exactly ``shapes``."""
    rng = np.random.default_rng(0)
    feeds = {}
    for name in sess.input_names:
        shape = shapes.get(name) or next(iter(shapes.values()))
        if name == "input_ids":
            feeds[name] = rng.integers(1000, 2000, size=shape, dtype=np.int64)
        elif name == "attention_mask":
            feeds[name] = np.ones(shape, dtype=np.int64)
        elif name == "pixel_values":
            feeds[name] = rng.standard_normal(size=shape, dtype=np.float32)
        else:
            feeds[name] = np.zeros(shape, dtype=np.int64)
    for _ in range(warmup):
        sess.run(feeds)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(feeds)
        times.append((time.perf_counter() - t) * 1000)
    p50, p90, p99 = np.percentile(times, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(np.mean(times)),
            "iters": iters}
