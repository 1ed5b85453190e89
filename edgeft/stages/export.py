"""Stage ``export``: the FP32 baseline and the INT8 QAT model to ONNX through optimum-onnx (Optimum's
OnnxConfig for Hugging Face models, ``models.vision.TorchvisionOnnxConfig`` for torchvision ones).

Reads (through the run context): ``finetune.baseline``, ``finetune.qat_state``, ``finetune.splits``, ``finetune.facts``;
config ``keep_fp32`` (blocks whose quantizers are turned off, so they export without Q/DQ).
Writes (``export/``): ``fp32/model.onnx`` and ``int8/model.onnx`` (Q/DQ nodes from the ModelOpt
quantizers), each with its tokenizer and config; ``parity.json``; ``int8/calibration_inputs.npz``: model
inputs for up to CALIB_INPUTS samples of the calibration set, for backends that calibrate extra
activations in their own graph flavour (ONNX Runtime's int8 Conv/Add units need output quantizers).
Shows parity: runs PyTorch and ONNX Runtime on real test inputs and prints, per output, ✓/✗ with the
max abs difference. FP32 must match within FP32_ATOL. For Q/DQ the check is top-1 agreement: PyTorch
fake-quant and ORT round a value on a step boundary differently now and then, and one int8 step early
in the network moves the logits by tenths, so the difference is printed but decisions are what must
match. The Q/DQ graph is evaluated with ORT's optimizations off (``reference_session``): its own math,
the same on every CPU.

Raises:
    ParityError: an output differs beyond tolerance (every failing output is listed).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeft.errors import ConfigError, ParityError
from edgeft_runtime.fileio import read_json, write_json_atomic
from edgeft.manifest import Artifact

NAME = "export"
OPSET = 17
PARITY_SAMPLES = 32
FP32_ATOL = 1e-3
QDQ_MIN_AGREEMENT = 0.9
CALIB_INPUTS = 64
CALIB_INPUT_BYTES = 16 << 20


def fingerprint(ctx) -> str:
    upstream = ctx.recorded("finetune.baseline", "finetune.qat_state", "finetune.splits", "finetune.facts")
    return ctx.fingerprint(NAME, {"opset": OPSET, "keep_fp32": ctx.config.keep_fp32}, upstream)


def reference_session(onnx_path: Path):
    """ONNX Runtime with its graph optimizations off: Q/DQ nodes then compute in float, exactly as the graph
    says, on any CPU. With them on, ORT fuses Q/DQ into int8 kernels whose results depend on the host (x86
    without VNNI saturates u8s8 sums), which is the engine's business, checked at compile and verify."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])


def parity(model, onnx_path: Path, feeds_pt: dict, *, atol: float | None, min_agreement: float | None) -> dict:
    """Compare PyTorch and ONNX Runtime on the same inputs; returns a per-output record."""
    import torch

    with torch.no_grad():
        ref = model(**feeds_pt).logits.float().numpy()
    sess = reference_session(onnx_path)
    names = {i.name for i in sess.get_inputs()}
    got = sess.run(["logits"], {k: v.numpy() for k, v in feeds_pt.items() if k in names})[0]
    diff = float(np.abs(ref - got).max())
    agree = float((ref.argmax(-1) == got.argmax(-1)).mean())
    if ref.shape[-1] == 1 and atol is None:    # regression: no top-1; allow 10% of the outputs' spread
        atol = 0.1 * float(ref.max() - ref.min()) + 1e-6
        min_agreement = None
    ok = (atol is None or diff <= atol) and (min_agreement is None or agree >= min_agreement)
    return {"output": "logits", "max_abs_diff": diff, "atol": atol, "top1_agreement": agree,
            "min_agreement": min_agreement, "ok": ok, "samples": int(ref.shape[0])}


def run(ctx, work: Path, force: bool = False) -> list[Artifact]:
    from edgeft.data.loading import read_split
    from edgeft.models import family_for
    from edgeft.quant import modelopt_int8

    base_dir = ctx.require("finetune.baseline")
    facts = ctx.facts()
    labels = facts.labels
    family = family_for(ctx.config, facts.modality, saved=base_dir)
    test = read_split(ctx.require("finetune.splits"), "test")[:PARITY_SAMPLES]
    feeds = family.feeds([e.text for e in test])

    baseline = family.load_saved(base_dir, labels).eval()
    ctx.log("export: FP32 baseline -> ONNX (optimum-onnx)")
    family.export(baseline, work / "fp32", OPSET)
    results = {"fp32": parity(baseline, work / "fp32/model.onnx", feeds, atol=FP32_ATOL, min_agreement=None)}

    qmodel = modelopt_int8.restore(family.load_saved(base_dir, labels), ctx.require("finetune.qat_state")).eval()
    if ctx.config.keep_fp32:
        from edgeft.quant.sensitivity import keep_in_high_precision

        try:
            n = keep_in_high_precision(qmodel, ctx.config.keep_fp32)
        except ValueError as e:
            raise ConfigError(str(e), fix="use the block names of the sensitivity table in finetune/metrics.json "
                                          "(qat.sensitivity), or a module path inside one") from None
        ctx.log(f"export: keeping {ctx.config.keep_fp32} in FP32 ({n} quantizers off)")
    ctx.log("export: INT8 QAT model -> ONNX with Q/DQ (optimum-onnx)")
    family.export(qmodel, work / "int8", OPSET)
    results["int8"] = parity(qmodel, work / "int8/model.onnx", feeds, atol=None, min_agreement=QDQ_MIN_AGREEMENT)
    qdq = _count_qdq(work / "int8/model.onnx")
    results["int8"]["qdq_nodes"] = qdq

    for name, r in results.items():
        mark = "✓" if r["ok"] else "✗"
        rule = (f"atol {r['atol']}" if r["atol"] is not None else
                f"top-1 agreement {r['top1_agreement']:.3f} >= {r['min_agreement']}")
        ctx.log(f"export: parity {name}/{r['output']}: {mark} max abs diff {r['max_abs_diff']:.2e} ({rule}) "
                f"on {r['samples']} test inputs")
    write_json_atomic(work / "parity.json", results)
    failing = [f"{n}/{r['output']}: max diff {r['max_abs_diff']:.3g} (atol {r['atol']}), agreement {r['top1_agreement']:.3f}"
               for n, r in results.items() if not r["ok"]]
    if failing:
        raise ParityError("ONNX export does not match PyTorch:\n  - " + "\n  - ".join(failing),
                          fix="report this with parity.json; try another opset or transformers version")
    n_calib = _save_calibration_inputs(ctx, family, work / "int8/calibration_inputs.npz")
    ctx.log(f"export: {n_calib} calibration inputs saved for backends that calibrate their own graph")
    parent = {"fp32": "finetune/baseline/model.safetensors", "int8": "finetune/qat/modelopt_state.pth"}
    return [Artifact(f"{p}/model.onnx", f"onnx/{p}", NAME, parents=[parent[p]], metrics=results[p])
            for p in ("fp32", "int8")] + [Artifact("parity.json", "metrics/parity", NAME),
                                          Artifact("int8/calibration_inputs.npz", "data/calibration-inputs", NAME)]


def _save_calibration_inputs(ctx, family, dest: Path) -> int:
    """The first samples of the run's calibration set, as the model's input arrays (at most
    CALIB_INPUT_BYTES, so large images keep fewer)."""
    from edgeft.calibration import load_calibration, select_indices
    from edgeft.data.loading import read_split

    calib = load_calibration(ctx.config.calibration)
    texts = [e.text for e in read_split(ctx.require("finetune.splits"), calib.split)]
    idx = select_indices(len(texts), calib)[:CALIB_INPUTS]
    feeds = {k: v.numpy() for k, v in family.feeds([texts[i] for i in idx], calib.max_length).items()}
    per_sample = sum(v[:1].nbytes for v in feeds.values())
    n = max(1, min(len(idx), CALIB_INPUT_BYTES // max(per_sample, 1)))
    with open(dest, "wb") as f:
        np.savez(f, **{k: v[:n] for k, v in feeds.items()})
    return n


def _count_qdq(path: Path) -> dict[str, int]:
    import onnx

    ops = [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]
    return {"QuantizeLinear": ops.count("QuantizeLinear"), "DequantizeLinear": ops.count("DequantizeLinear")}
