"""Shared by the benchmarks: engine accuracy through edgeft's own runtime, and interleaved latency rounds."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    print("$", " ".join(map(str, cmd)), file=sys.stderr, flush=True)
    return subprocess.run([str(c) for c in cmd], **kw)


def accuracy(engine: Path, rows: list[dict], labels: list[str], max_length: int = 128) -> float:
    """Top-1 accuracy of an engine folder on ``rows`` (``text`` = input text or image path) at batch 1."""
    sys.path.insert(0, str(REPO))
    from edgeft.stages.verify import predict

    logits = predict(engine, [r["text"] for r in rows], max_length)
    y = np.array([labels.index(r["label"]) for r in rows])
    return float((logits.argmax(-1) == y).mean())


def interleaved_p50(commands: dict[str, list], rounds: int) -> dict[str, float]:
    """Run every latency command once per round, in turn (each its own process, printing JSON with
    ``p50_ms`` on its last line); the median over rounds of each one's p50."""
    p50: dict[str, list[float]] = {k: [] for k in commands}
    for r in range(rounds):
        for name, cmd in commands.items():
            out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=True,
                                 env={**os.environ, "PYTHONWARNINGS": "ignore"}).stdout
            p50[name].append(json.loads(out.strip().splitlines()[-1])["p50_ms"])
        print(f"latency round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    return {k: float(np.median(v)) for k, v in p50.items()}


def ort_latency_cmd(engine: Path, shapes: dict[str, list[int]], iters: int = 100) -> list:
    return [sys.executable, "-m", "edgeft.runtime.latency", engine,
            *[f"--shape={k}={'x'.join(map(str, v))}" for k, v in shapes.items()], f"--iters={iters}"]


def stage_minutes(run_dir: Path) -> float:
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    return sum(s["seconds"] for s in stages.values()) / 60
