"""Measure an engine's latency in this process and print JSON; verify starts one process per engine.

Usage: python -m edgeft.runtime.latency ENGINE_DIR --shape input_ids=1x128 [--warmup N] [--iters N]
Inputs are random token ids with a full attention mask, or random normalized pixels, at exactly the given shape.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def measure(engine_dir: str, shapes: dict[str, list[int]], warmup: int, iters: int, threads: int | None) -> dict:
    """Time an engine through its backend (``Backend.latency``)."""
    from edgeft.backends import get_backend
    from edgeft.runtime.session import runtime_of

    return get_backend(runtime_of(Path(engine_dir))).latency(Path(engine_dir), shapes, warmup, iters, threads)


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
