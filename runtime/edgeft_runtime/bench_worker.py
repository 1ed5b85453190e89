"""One measurement in a fresh process: ``python -I -m edgeft_runtime.bench_worker REQUEST_JSON``.

The request names an engine (``kind`` + ``path``), a point (batch, seq, threads) and a mode:
- ``time``: open the engine, run once (prints ``FIRST`` so the parent can time the cold start), warm up for
  ``warmup_s``, then run for ``duration_s`` (at least ``min_iters`` runs) on random inputs of exactly the point's
  shape; prints per-run percentiles, load time and the process's peak RSS.
- ``predict``: run the inputs in ``inputs_file`` at the point's batch size, each batch padded to its longest
  input (as a batched service pads), and print every row's logits.
The last stdout line is the JSON result. Torch is imported only by an engine that is torch.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


class _OrtFile:
    """A plain ONNX file under ONNX Runtime with its own graph optimizations (what a user gets by default)."""

    def __init__(self, path: str, threads: int, optimization: str = "all"):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                       "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                       "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[optimization]
        if threads:
            so.intra_op_num_threads = threads
        so.log_severity_level = 3
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds):
        return dict(zip(self.output_names, self.session.run(self.output_names, {k: feeds[k] for k in self.input_names})))


class _OpenVINO:
    """OpenVINO's CPU runtime reading the ONNX directly (what optimum-intel users run)."""

    def __init__(self, path: str, threads: int):
        import openvino as ov

        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
        self.model = core.compile_model(core.read_model(path), "CPU", config)
        self.request = self.model.create_infer_request()
        self.input_names = [i.any_name for i in self.model.inputs]

    def run(self, feeds):
        res = self.request.infer({k: feeds[k] for k in self.input_names})
        return {"logits": np.asarray(next(iter(res.values())))}

    def runtime_precisions(self) -> dict:
        """Runtime precision per layer, counted (OpenVINO's execution graph)."""
        from collections import Counter

        runtime = self.model.get_runtime_model()
        return dict(Counter(op.get_rt_info()["runtimePrecision"].astype(str) for op in runtime.get_ordered_ops()))


def open_engine(spec: dict, threads: int):
    kind = spec["kind"]
    if kind == "engine_dir":
        from edgeft_runtime.session import open_engine as open_dir

        return open_dir(Path(spec["path"]), threads or None)
    if kind == "onnx":
        return _OrtFile(spec["path"], threads, spec.get("optimization", "all"))
    if kind == "openvino":
        return _OpenVINO(spec["path"], threads)
    if kind == "adapter":                    # "module:function", called with (path, threads)
        import importlib

        module, func = spec["adapter"].split(":")
        return getattr(importlib.import_module(module), func)(spec["path"], threads)
    raise ValueError(f"unknown engine kind {kind!r}")


def random_feeds(input_names, batch: int, seq: int | None, image_size: int | None) -> dict:
    rng = np.random.default_rng(0)
    feeds = {}
    for name in input_names:
        if name == "pixel_values":
            feeds[name] = rng.standard_normal((batch, 3, image_size, image_size), dtype=np.float32)
        elif name == "input_ids":
            feeds[name] = rng.integers(1000, 2000, size=(batch, seq), dtype=np.int64)
        elif name == "attention_mask":
            feeds[name] = np.ones((batch, seq), dtype=np.int64)
        else:
            feeds[name] = np.zeros((batch, seq), dtype=np.int64)
    return feeds


def peak_rss_mb() -> float | None:
    """This process's peak resident memory. Linux: VmHWM, which starts afresh at exec; ru_maxrss does not (it
    keeps the forking parent's size, so every worker of a large parent would report the parent's)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024          # kB
    try:
        import resource
    except ImportError:                       # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024      # bytes on macOS, KiB elsewhere


def gpu_memory_mb() -> float | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).used / (1 << 20)
    except Exception:  # noqa: BLE001 - no NVML, no GPU: nothing to report
        return None


def time_engine(req: dict) -> dict:
    t0 = time.perf_counter()
    sess = open_engine(req["engine"], req["threads"])
    load_s = time.perf_counter() - t0
    feeds = random_feeds(sess.input_names, req["batch"], req.get("seq"), req.get("image_size"))
    sess.run(feeds)
    print("FIRST", flush=True)
    end = time.perf_counter() + req["warmup_s"]
    while time.perf_counter() < end:
        sess.run(feeds)
    times = []
    start = time.perf_counter()
    while len(times) < req["min_iters"] or (time.perf_counter() - start < req["duration_s"] and len(times) < req["max_iters"]):
        t = time.perf_counter()
        sess.run(feeds)
        times.append((time.perf_counter() - t) * 1000)
    p50, p90, p99 = np.percentile(times, [50, 90, 99])
    out = {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(np.mean(times)),
           "std_ms": float(np.std(times)), "iters": len(times), "load_s": load_s, "peak_rss_mb": peak_rss_mb(),
           "gpu_memory_mb": gpu_memory_mb()}
    if hasattr(sess, "runtime_precisions"):          # OpenVINO: the precision each layer runs in on this CPU
        out["runtime_precisions"] = sess.runtime_precisions()
    return out


def predict_engine(req: dict) -> dict:
    from edgeft_runtime.inputs import preprocessor_for

    sess = open_engine(req["engine"], req["threads"])
    pre = preprocessor_for(Path(req["preprocessor_dir"]), req.get("max_length") or 128)
    inputs = json.loads(Path(req["inputs_file"]).read_text(encoding="utf-8"))
    rows = []
    for i in range(0, len(inputs), req["batch"]):
        out = sess.run(pre(inputs[i:i + req["batch"]], sess.input_names))
        rows += np.asarray(out.get("logits", next(iter(out.values())))).tolist()
    return {"logits": rows}


def main() -> None:
    req = json.loads(sys.argv[1])
    out = time_engine(req) if req["mode"] == "time" else predict_engine(req)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
