"""Q/DQ lint for TensorRT explicit quantization, with onnx-graphsurgeon. Runs on any CPU.

TensorRT builds an INT8 engine from the Q/DQ nodes in the graph ("explicit quantization") and accepts
only what it can fuse: signed INT8 with zero point 0 (symmetric), per-tensor activation scales,
per-channel weight scales on the output-channel axis of the layer that consumes the weight, and
every QuantizeLinear feeding DequantizeLinear. Each problem names the node, the rule and the fix.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# compute op -> (input index of the weight, output-channel axis of that weight as laid out in ONNX)
WEIGHT_AXIS = {"Conv": (1, 0), "ConvTranspose": (1, 1), "MatMul": (1, -1)}


def _const(tensor) -> np.ndarray | None:
    import onnx_graphsurgeon as gs

    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        return np.asarray(tensor.inputs[0].attrs["value"].values)
    return None


def _axis(node) -> int:
    return int(node.attrs.get("axis", 1))


def _weight_consumer_axis(dq) -> tuple[str, int] | None:
    """Follow a weight DQ through Transposes to its compute op; the axis its scales must be on."""
    t, perm = dq.outputs[0], None
    for _ in range(3):
        users = list(t.outputs)
        if len(users) != 1:
            return None
        user = users[0]
        if user.op == "Transpose":
            perm = list(user.attrs["perm"])
            t = user.outputs[0]
            continue
        if user.op == "Gemm":
            want = 0 if user.attrs.get("transB", 0) else 1
        elif user.op in WEIGHT_AXIS and user.inputs[WEIGHT_AXIS[user.op][0]] is t:
            want = WEIGHT_AXIS[user.op][1]
        else:
            return None
        rank = len(np.shape(_const(dq.inputs[0]))) if _const(dq.inputs[0]) is not None else 2
        want %= rank
        return user.op, (perm[want] if perm is not None else want)
    return None


def lint_for_tensorrt(path: Path) -> dict:
    """Return ``{"ok": bool, "problems": [...], "counts": {...}}`` for the Q/DQ graph at ``path``."""
    import onnx
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(onnx.load(str(path)))
    problems: list[str] = []
    counts = {"QuantizeLinear": 0, "DequantizeLinear": 0, "weight_dq": 0, "activation_q": 0}
    for node in graph.nodes:
        if node.op not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        counts[node.op] += 1
        name = node.name or node.outputs[0].name
        scale = _const(node.inputs[1])
        zp = _const(node.inputs[2]) if len(node.inputs) > 2 else None
        if scale is None:
            problems.append(f"{name}: scale is computed at run time; TensorRT needs a constant scale")
            continue
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            problems.append(f"{name}: scale must be finite and > 0 (min {scale.min():.3g})")
        if zp is None or zp.dtype != np.int8:
            got = "missing (uint8 default)" if zp is None else str(zp.dtype)
            problems.append(f"{name}: zero point must be int8, got {got}; export signed symmetric INT8")
        elif np.any(zp != 0):
            problems.append(f"{name}: zero point must be 0 (symmetric), got values up to {np.abs(zp).max()}")
        is_weight = node.op == "DequantizeLinear" and _is_weight_path(node)
        if node.op == "QuantizeLinear":
            users = [u.op for u in node.outputs[0].outputs]
            if any(op != "DequantizeLinear" for op in users):
                problems.append(f"{name}: QuantizeLinear feeds {users}; TensorRT needs it to feed DequantizeLinear only")
            if not _is_weight_input(node):
                counts["activation_q"] += 1
                if scale.size != 1:
                    problems.append(f"{name}: activation scale must be per-tensor, got {scale.size} values")
        if is_weight:
            counts["weight_dq"] += 1
            if scale.size > 1:
                found = _weight_consumer_axis(node)
                if found and _axis(node) % max(len(_weight_shape(node)), 1) != found[1]:
                    problems.append(f"{name}: per-channel scales on axis {_axis(node)}, but {found[0]} needs the "
                                    f"output-channel axis {found[1]}")
    return {"ok": not problems, "problems": problems, "counts": counts}


def _is_weight_input(q) -> bool:
    return _const(q.inputs[0]) is not None


def _is_weight_path(dq) -> bool:
    src = dq.inputs[0]
    if _const(src) is not None:
        return True
    return len(src.inputs) == 1 and src.inputs[0].op == "QuantizeLinear" and _is_weight_input(src.inputs[0])


def _weight_shape(dq) -> tuple:
    src = dq.inputs[0]
    v = _const(src)
    if v is None and src.inputs:
        v = _const(src.inputs[0].inputs[0])
    return np.shape(v) if v is not None else ()
