"""Shared by the benchmarks: run a command, and hand a finished run to `edgeft bench`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    print("$", " ".join(map(str, cmd)), file=sys.stderr, flush=True)
    return subprocess.run([str(c) for c in cmd], **kw)


def edgeft_bench(run_dir: Path, out: Path, sweep: list[str], rounds: int = 3, extra: list[str] = ()) -> dict:
    """`edgeft bench RUN_DIR` over ``sweep`` into ``out``; returns bench.json."""
    args = [sys.executable, "-m", "edgeft", "bench", run_dir, "--out", out, "--rounds", str(rounds), *extra]
    for s in sweep:
        args += ["--sweep", s]
    code = run(args).returncode
    if code != 0:
        sys.exit(code)
    return json.loads((out / "bench.json").read_text())


def stage_minutes(run_dir: Path) -> float:
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    return sum(s["seconds"] for s in stages.values()) / 60
