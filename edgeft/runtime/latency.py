"""Measure an engine's latency in this process and print JSON; verify starts one process per engine.

Usage: python -m edgeft.runtime.latency ENGINE_DIR --shape input_ids=1x128 [--warmup N] [--iters N]
Inputs are random token ids with a full attention mask, or random normalized pixels, at exactly the given shape.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def measure(engine_dir: str, shapes: dict[str, list[int]], warmup: int, iters: int, threads: int | None) -> dict:
    from edgeft.runtime.session import open_engine

    t0 = time.perf_counter()
    sess = open_engine(engine_dir, threads)
    load_s = time.perf_counter() - t0
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
            "iters": iters, "load_s": load_s}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("engine_dir")
    ap.add_argument("--shape", action="append", default=[], help="name=BxS, repeatable")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    shapes = {k: [int(d) for d in v.split("x")] for k, v in (s.split("=") for s in a.shape)}
    print(json.dumps(measure(a.engine_dir, shapes or {"input_ids": [1, 128]}, a.warmup, a.iters, a.threads)))


if __name__ == "__main__":
    main()
