"""Where an ONNX Runtime engine spends its time, per operator type: ONNX Runtime's own profiler on an engine of
a run (or any .onnx), at one input shape, with the host (CPU model and ISA flags) in the header.

    python bench/ort_op_profile.py RUN_DIR/compile/TARGET/engine [RUN_DIR/compile/TARGET/fp32-reference ...]
        [--batch 1] [--seq 128] [--iters 200] [--threads 0]

Text engines get token ids in [1000, 2000) and a full attention mask at ``--batch`` x ``--seq``; image engines
get random pixels at their exported size. The profiler adds per-node overhead, so the totals are above what
`edgeft bench` measures: read the shares and the ratios between engines profiled in the same run, not the
absolute milliseconds. Each engine is opened as edgeft's runtime opens it (saved optimized; ORT's layout
transforms at load only where engine.json asks for them), so the profile shows the kernels it runs on this CPU.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def feeds_for(session, batch: int, seq: int, rng) -> dict:
    feeds = {}
    for i in session.get_inputs():
        if i.type == "tensor(float)":       # an image: [batch, channels, height, width] from the export
            shape = [batch, *(d if isinstance(d, int) else 224 for d in i.shape[1:])]
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
        elif "input_ids" in i.name:
            feeds[i.name] = rng.integers(1000, 2000, (batch, seq)).astype(np.int64)
        elif "token_type" in i.name:
            feeds[i.name] = np.zeros((batch, seq), np.int64)
        else:
            feeds[i.name] = np.ones((batch, seq), np.int64)
    return feeds


def profile(model: Path, batch: int, seq: int, iters: int, threads: int, at_load: str = "disabled") -> tuple[dict, float]:
    """Kernel time per op type, ms per inference (and the node count per inference), and the total."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if at_load == "all"
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tempfile.gettempdir()) / f"edgeft-profile-{os.getpid()}")
    session = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    feeds = feeds_for(session, batch, seq, np.random.default_rng(0))
    warm = 20
    for _ in range(warm + iters):
        session.run(None, feeds)
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    ms: dict[str, float] = collections.defaultdict(float)
    nodes: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            ms[e["args"]["op_name"]] += e["dur"] / 1000
            nodes[e["args"]["op_name"]] += 1
    # the profile holds the warm-up runs too: per-inference figures divide by every run profiled
    runs = warm + iters
    per = {op: (t / runs, nodes[op] // runs) for op, t in ms.items()}
    return per, sum(t for t, _ in per.values())


def engine_model(path: Path) -> tuple[Path, str]:
    """The model file, and its ``load_optimization_level`` (what the runtime applies at load)."""
    if path.is_dir():
        meta = json.loads((path / "engine.json").read_text())
        return path / meta["file"], meta.get("load_optimization_level", "disabled")
    return path, "disabled"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("engines", nargs="+", type=Path, help="engine folders (with engine.json) or .onnx files")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 = ONNX Runtime's default")
    a = ap.parse_args()
    import onnxruntime as ort

    from edgeft_runtime.hostinfo import current

    host = current()
    print(f"# {host.cpu} [{host.isa_summary()}], ORT {ort.__version__}, threads {a.threads or 'default'}, "
          f"b{a.batch} s{a.seq}, {a.iters} + 20 warm-up runs, all profiled and averaged")
    out = {"host": {"cpu": host.cpu, "isa_flags": host.isa_summary()}, "onnxruntime": ort.__version__, "engines": {}}
    totals = {}
    for path in a.engines:
        model, at_load = engine_model(path)
        per, total = profile(model, a.batch, a.seq, a.iters, a.threads, at_load)
        totals[str(path)] = total
        print(f"\n{path}: {total:.3f} ms per inference under the profiler")
        print(f"  {'op type':28s} {'ms':>7s} {'share':>6s} {'nodes':>5s}")
        for op, (t, n) in sorted(per.items(), key=lambda kv: -kv[1][0]):
            print(f"  {op:28s} {t:7.3f} {t / total:6.1%} {n:5d}")
        out["engines"][str(path)] = {"total_ms": total, "ops": {op: {"ms": t, "nodes": n} for op, (t, n) in per.items()}}
    if len(totals) > 1:
        first = next(iter(totals.values()))
        print("\n" + ", ".join(f"{Path(k).name}: {v / first:.2f}× the first" for k, v in totals.items()))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
