"""Measure an engine's latency in this process and print JSON; verify starts one process per engine.

Usage: python -m edgeft.runtime.latency ENGINE_DIR --shape input_ids=1x128 [--warmup N] [--iters N]
Inputs are random token ids with a full attention mask, or random normalized pixels, at exactly the given shape.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def measure(engine_dir: str, shapes: dict[str, list[int]], warmup: int, iters: int, threads: int | None) -> dict:
    """Time an engine through its backend (``Backend.latency``)."""
    from edgeft.backends import get_backend
    from edgeft_runtime.session import runtime_of

    return get_backend(runtime_of(Path(engine_dir))).latency(Path(engine_dir), shapes, warmup, iters, threads)


def check_shapes(engine_dir: Path, shapes: dict[str, list[int]]) -> None:
    """Every dimension >= 1, and a sequence no longer than the model's position embeddings (config.json)."""
    from edgeft.errors import EdgeftError
    from edgeft_runtime.fileio import read_json

    for name, dims in shapes.items():
        if not dims or any(d < 1 for d in dims):
            raise EdgeftError(f"--shape {name}={'x'.join(map(str, dims))}: every dimension must be at least 1",
                              fix="pass e.g. --shape input_ids=1x128")
    cfg = engine_dir / "config.json"
    limit = read_json(cfg).get("max_position_embeddings") if cfg.is_file() else None
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        if isinstance(limit, int) and name in shapes and len(shapes[name]) > 1 and shapes[name][1] > limit:
            raise EdgeftError(f"--shape {name}={'x'.join(map(str, shapes[name]))}: the model takes at most {limit} "
                              "tokens (max_position_embeddings)", fix=f"pass a sequence length of {limit} or less")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("engine_dir")
    ap.add_argument("--shape", action="append", default=[], help="name=BxS, repeatable")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    from edgeft.errors import EdgeftError
    from edgeft_runtime.session import check_engine_folder

    try:
        shapes = {k: [int(d) for d in v.split("x")] for k, v in (s.split("=", 1) for s in a.shape)}
    except ValueError:
        ap.error("--shape takes NAME=BxS, e.g. input_ids=1x128")
    shapes = shapes or {"input_ids": [1, 128]}
    try:
        check_engine_folder(Path(a.engine_dir))
        check_shapes(Path(a.engine_dir), shapes)
    except EdgeftError as e:
        print(f"error: {e}", file=sys.stderr)       # EdgeftError prints its fix under the message
        raise SystemExit(1) from None
    print(json.dumps(measure(a.engine_dir, shapes, a.warmup, a.iters, a.threads)))


if __name__ == "__main__":
    main()
