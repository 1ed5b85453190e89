"""The golden set a bundle carries: test-split inputs in raw form with the FP32 baseline's and the engine's
logits (both as verify recorded them), and the tolerance a device's result must meet.

The tolerance: INT8 kernels differ between CPUs (AVX2 u8u8, VNNI u8s8, ARM dot products, TensorRT), each
rounding its requantizations its own way. Two honest results differ by at most about twice the
larger one's distance from exact Q/DQ math. So ``atol`` is the larger of
- 4 × the largest |engine − Q/DQ reference| measured here over the golden inputs (the reference runs the
  exported graph with ONNX Runtime's optimizations off: the quantization math in float, the same on any
  CPU), and
- the classifier's quantization step: two steps of its input activation on its largest weight, the
  change one requantization that rounds the other way can make to a logit.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeft_runtime.bundle import KIT_FLOOR, golden_atol, kit_floor  # the device recomputes atol with this same rule

RULE = ("max(4 x the largest |engine - Q/DQ float reference| over the golden inputs, "
        "2 x the classifier's input step x its largest |weight|)")


def _scalar(a: np.ndarray) -> float:
    return float(np.max(np.abs(a)))


def head_step(onnx_path: Path) -> float | None:
    """2 × (input activation scale) × (largest |weight|) of the last MatMul/Gemm before the first output, when
    both of its inputs come through DequantizeLinear (the classifier was quantized); else None."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    inits = {i.name: i for i in g.initializer}

    def const(name: str) -> np.ndarray | None:
        if name in inits:
            return numpy_helper.to_array(inits[name])
        n = producers.get(name)
        if n is not None and n.op_type == "Constant":
            return numpy_helper.to_array(n.attribute[0].t)
        return None

    node, hops = producers.get(g.output[0].name), 0
    while node is not None and node.op_type not in ("MatMul", "Gemm") and hops < 12:
        node, hops = (producers.get(node.input[0]) if node.input else None), hops + 1
    if node is None or node.op_type not in ("MatMul", "Gemm"):
        return None
    act, weight = (producers.get(name) for name in node.input[:2])
    if act is None or act.op_type != "DequantizeLinear" or weight is None or weight.op_type != "DequantizeLinear":
        return None
    s_x = const(act.input[1])
    source = producers.get(weight.input[0])
    if source is not None and source.op_type == "QuantizeLinear":      # fake-quantized float weights (ModelOpt)
        w = const(source.input[0])
        largest = None if w is None else float(np.abs(w).max())
    else:                                                               # int8 weights with a scale
        w_q, s_w = const(weight.input[0]), const(weight.input[1])
        zp = const(weight.input[2]) if len(weight.input) > 2 and weight.input[2] else None
        largest = None if w_q is None or s_w is None else \
            float(np.abs(w_q.astype(np.int64) - (0 if zp is None else int(np.max(zp)))).max()) * _scalar(s_w)
    if s_x is None or largest is None:
        return None
    return 2.0 * _scalar(s_x) * largest

def reference_logits(onnx_path: Path, engine_dir: Path, inputs: list, max_length: int) -> np.ndarray:
    """The exported graph's logits on ``inputs`` at batch 1 with ONNX Runtime's optimizations off."""
    from edgeft.stages.export import reference_session
    from edgeft_runtime.inputs import preprocessor_for

    sess = reference_session(onnx_path)
    names = [i.name for i in sess.get_inputs()]
    pre = preprocessor_for(engine_dir, max_length)
    rows = [sess.run(None, pre([x], names))[0][0] for x in inputs]
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)


def tolerance(engine_logits: np.ndarray, reference: np.ndarray, step: float | None, deferred_kit: bool = False) -> dict:
    """``deferred_kit``: the engine is built on the device by TensorRT (other kernels, FP16 layers) while the
    recorded logits are ONNX Runtime's here; no TensorRT result backs a tighter bound yet."""
    measured = float(np.abs(engine_logits - reference).max()) if reference.size else 0.0
    floor = float(step) if step else 0.0
    kit = kit_floor(engine_logits) if deferred_kit else 0.0
    atol = golden_atol(measured, floor, kit)
    out = {"atol": float(atol), "measured_kernel_deviation": measured, "quantization_floor": floor,
           "rule": RULE}
    if deferred_kit:
        out["tensorrt_kit_floor"] = kit
        out["rule"] += f"; TensorRT kit: at least {KIT_FLOOR:.0%} of the largest |logit| (not measured on TensorRT)"
    return out
