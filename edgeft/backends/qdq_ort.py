"""Rewrite a Q/DQ graph into the flavour ONNX Runtime's x86 int8 kernels run fastest. Passes 1-2 are
exact: no value changes, only how the same int8 grid is expressed.

1. Deduplicate activation QuantizeLinear/DequantizeLinear nodes that read the same tensor with the
   same scale and zero point (ModelOpt gives q, k and v each their own input quantizer on one
   tensor; three identical quantize ops per layer become one).
2. Signed -> unsigned activations: ``q = clip(round(x/s) + 0, -128, 127)`` equals
   ``clip(round(x/s) + 128, 0, 255) - 128``, so zero point 0 (int8) becomes 128 (uint8). ORT's
   ``MatMulIntegerToFloat`` runs u8 x s8 natively with VNNI; s8 x s8 needs extra work on x86.
   Weights stay signed, symmetric, per-channel. Exception: a quantized Relu output gets zero point 0
   (same grid, never negative, clips at 255 steps instead of 127) so ORT can drop the Relu.

   With ``int8_kernels: u8u8`` (x86 without VNNI) weights get the same shift (``weights_to_unsigned``):
   those CPUs add u8 x s8 products in pairs into int16 (``vpmaddubsw``), which saturates for large
   activations times large weights; the u8u8 kernels widen to int16 first and do not. With
   ``int8_kernels: u8s8_7bit`` weights move to a 7-bit grid instead (``weights_to_7bit``, not exact), which
   keeps the u8s8 kernels and cannot saturate.

3. Large embedding tables stored int8 per row (``int8_embedding_tables``; target option
   ``onnxruntime.int8_embeddings``): exact only for tables already on that grid, which the finetune
   stage ensures (``quant.modelopt_int8.snap_embeddings``).

TensorRT wants the opposite (signed, zero point 0): never apply this to a TensorRT-bound graph.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgeft.backends.onnx_graph import attr as _attr
from edgeft.backends.onnx_graph import constants as _constants
from edgeft.backends.onnx_graph import consumers, constants_through_identity, producers
from edgeft.quant.grid import EMBEDDING_MIN_ROWS, per_row_int8

Q_OPS = ("QuantizeLinear", "DequantizeLinear")


def _float_cast_sources(graph) -> dict[str, str]:
    """Map the output of every Cast-to-float to its input (ModelOpt wraps quantizer inputs in
    such casts): Q(Cast_float(x)) and Q(x) quantize the same values when both are valid."""
    from onnx import TensorProto

    return {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Cast"
            and any(a.name == "to" and a.i == TensorProto.FLOAT for a in n.attribute)}


def _source(name: str, casts: dict[str, str]) -> str:
    while name in casts:
        name = casts[name]
    return name


def _key(node, consts: dict[str, np.ndarray], casts: dict[str, str]) -> tuple | None:
    if len(node.input) < 3 or node.input[1] not in consts or node.input[2] not in consts:
        return None
    attrs = tuple(sorted((a.name, a.i) for a in node.attribute))
    s, z = consts[node.input[1]], consts[node.input[2]]
    source = _source(node.input[0], casts) if node.op_type == "QuantizeLinear" else node.input[0]
    return (node.op_type, source, s.tobytes(), str(s.dtype), z.tobytes(), str(z.dtype), attrs)


def _rename_inputs(graph, mapping: dict[str, str]) -> None:
    for n in graph.node:
        for i, name in enumerate(n.input):
            if name in mapping:
                n.input[i] = mapping[name]
    for o in graph.output:
        if o.name in mapping:   # a graph output must keep its name: keep the node instead
            raise ValueError("graph output produced by a duplicate Q/DQ node")


def dedupe(graph, consts: dict[str, np.ndarray]) -> int:
    """Merge identical activation Q (then DQ) nodes; returns how many nodes were removed."""
    removed = 0
    casts = _float_cast_sources(graph)
    for op in Q_OPS:
        seen: dict[tuple, str] = {}
        mapping: dict[str, str] = {}
        drop = []
        for n in graph.node:
            if n.op_type != op or n.input[0] in consts:
                continue
            key = _key(n, consts, casts)
            if key is None:
                continue
            if key in seen:
                mapping[n.output[0]] = seen[key]
                drop.append(n)
            else:
                seen[key] = n.output[0]
        _rename_inputs(graph, mapping)
        for n in drop:
            graph.node.remove(n)
        removed += len(drop)
    return removed


def _non_negative(graph) -> set[str]:
    """Tensors that cannot be negative: Relu outputs, and MaxPools of their quantized values."""
    prod = {o: n for n in graph.node for o in n.output}
    out: set[str] = set()
    for n in graph.node:
        if n.op_type == "Relu":
            out.add(n.output[0])
        elif n.op_type == "MaxPool":
            dq = prod.get(n.input[0])
            q = prod.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear" and q.input[0] in out:
                out.add(n.output[0])
    return out


def to_unsigned_activations(graph, consts: dict[str, np.ndarray]) -> int:
    """Turn int8/zero-point-0 activation Q/DQ pairs into uint8/zero-point-128. Returns pairs changed."""
    from onnx import numpy_helper

    changed = 0
    relu_out = _non_negative(graph)
    for q in [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in consts]:
        zp = consts.get(q.input[2]) if len(q.input) > 2 else None
        if zp is None or zp.dtype != np.int8 or zp.size != 1:
            continue
        # a Relu output is never negative: u8 at zero point 0 keeps the same grid points (and clips at
        # 255 steps instead of 127), and lets ORT drop the Relu into the producing Conv/Add's int8 unit
        shift = 0 if q.input[0] in relu_out and int(zp) == 0 else 128
        consumers = [n for n in graph.node if q.output[0] in n.input]
        if not consumers or any(c.op_type != "DequantizeLinear" for c in consumers):
            continue
        name = f"{q.name or q.output[0]}_zero_point_u8"
        graph.initializer.append(numpy_helper.from_array((zp.astype(np.int16) + shift).astype(np.uint8), name))
        for n in [q, *consumers]:
            n.input[2] = name
        changed += 1
    return changed


def _weight_form(dq, consts, prod, cons, inits):
    """How a ``DequantizeLinear`` gets a constant weight: ``("int8", w)`` from an int8 initializer, ``("qdq", q)``
    from a ``QuantizeLinear`` of a float constant that feeds only this DQ (what QAT exports write); else None."""
    w, q = consts.get(dq.input[0]), prod.get(dq.input[0])
    if w is not None and w.dtype == np.int8 and dq.input[0] in inits:
        return "int8", w
    if (q is not None and q.op_type == "QuantizeLinear" and q.input[0] in consts and len(q.input) > 2
            and [c.op_type for c in cons.get(q.output[0], [])] == ["DequantizeLinear"]):
        return "qdq", q
    return None


def weights_to_unsigned(graph, consts: dict[str, np.ndarray]) -> int:
    """Signed weights at zero point 0 -> uint8 at zero point 128 (``w + 128``: the same values), for
    ``DequantizeLinear`` of an int8 constant and for ``QuantizeLinear`` of a float constant (both forms
    reach ORT's optimizer, which folds either into its int8 kernels). Returns the weights changed."""
    from onnx import numpy_helper

    changed = 0
    prod, cons = producers(graph), consumers(graph)
    inits = {i.name for i in graph.initializer}
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear" and len(n.input) > 2]:
        zp = consts.get(dq.input[2])
        if zp is None or zp.dtype != np.int8 or zp.any():
            continue
        form = _weight_form(dq, consts, prod, cons, inits)
        if form is None:
            continue
        base = dq.name or dq.output[0]
        new_zp = numpy_helper.from_array(np.full(zp.shape, 128, np.uint8), f"{base}_zero_point_u8")
        if form[0] == "int8":
            graph.initializer.append(numpy_helper.from_array((form[1].astype(np.int16) + 128).astype(np.uint8), f"{base}_u8"))
            dq.input[0] = f"{base}_u8"
        else:
            form[1].input[2] = new_zp.name
        graph.initializer.append(new_zp)
        dq.input[2] = new_zp.name
        changed += 1
    return changed


WEIGHT_READERS = ("MatMul", "Gemm", "Conv")


def _int32_bias(node, prod, consts) -> bool:
    """Whether a Gemm/Conv already carries an int32 bias on the ``x_scale * w_scale`` grid (a new weight scale
    would rescale it)."""
    if node.op_type not in ("Gemm", "Conv") or len(node.input) < 3 or not node.input[2]:
        return False
    b = prod.get(node.input[2])
    return (b is not None and b.op_type == "DequantizeLinear" and b.input[0] in consts
            and consts[b.input[0]].dtype == np.int32)


def weights_to_7bit(graph, consts: dict[str, np.ndarray]) -> dict[str, Any]:
    """Signed symmetric weights re-gridded to 7 bits: ``q7 = round(q8 / 2)`` at twice the scale, stored int8
    in [-64, 64] (ONNX Runtime's ``reduce_range`` range). x86 CPUs without VNNI (AVX2, and AVX512 without
    VNNI) add u8 x s8 products in pairs into int16 (``vpmaddubsw``, in MLAS's GEMM and QLinearConv kernels);
    with |w| <= 64 a pair stays within 255 * 64 * 2 = 32640, so the fast u8s8 kernels are exact there. Not
    exact against the 8-bit graph: each weight moves by at most half a 7-bit step (one 8-bit step); the
    rounding from the float weight is used where the Q/DQ graph still has it.

    Only weights read by MatMul, Gemm or Conv (what runs in u8s8 kernels). Handles a ``DequantizeLinear`` of
    an int8 constant (zero point 0 or absent) and a ``QuantizeLinear`` of a float constant feeding only its
    ``DequantizeLinear`` (both become ``DQ(q7, 2s)``). A layer that already has an int32 bias tied to the
    weight scale is left as it is. Returns how many weights changed, how many were left for that bias, and
    the largest change of a dequantized weight in units of its new step."""
    from onnx import numpy_helper

    prod, cons = producers(graph), consumers(graph)
    inits = {i.name for i in graph.initializer}
    changed, kept, worst = 0, 0, 0.0
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        readers = cons.get(dq.output[0], [])
        if not readers or any(r.op_type not in WEIGHT_READERS for r in readers):
            continue
        zp = consts.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else np.zeros((), np.int8)
        scale = consts.get(dq.input[1])
        if zp is None or scale is None or zp.dtype != np.int8 or zp.any():
            continue
        form = _weight_form(dq, consts, prod, cons, inits)
        if form is None:
            continue
        if form[0] == "int8":
            steps = form[1].astype(np.float64)
        elif form[1].input[1:3] == dq.input[1:3]:      # re-rounded from the float weight on the DQ's own grid
            w = consts[form[1].input[0]]
            axis = _attr(dq, "axis", 1) % w.ndim
            s = scale.reshape([-1 if i == axis else 1 for i in range(w.ndim)]) if scale.size > 1 else scale
            steps = np.clip(w.astype(np.float64) / s, -128, 127)
        else:
            continue
        if any(_int32_bias(r, prod, consts) for r in readers):
            kept += 1
            continue
        q7 = np.clip(np.rint(steps / 2), -64, 64)
        worst = max(worst, float(np.abs(q7 - steps / 2).max()))
        base = dq.name or dq.output[0]
        graph.initializer.extend([numpy_helper.from_array(q7.astype(np.int8), f"{base}_w7"),
                                  numpy_helper.from_array((scale * 2).astype(scale.dtype), f"{base}_scale_w7")])
        dq.input[0], dq.input[1] = f"{base}_w7", f"{base}_scale_w7"
        changed += 1
    return {"weights_7bit": changed, "weights_7bit_kept_for_int32_bias": kept,
            "weight_7bit_max_step_error": round(worst, 4)}


def fold_bias_into_matmul_integer(model) -> int:
    """After ORT's optimizer: ``Add(MatMulIntegerToFloat(...), bias)`` -> ``MatMulIntegerToFloat(..., bias)``.

    ORT's Q/DQ fusion leaves the Linear bias as a separate Add; the kernel takes the bias itself and
    applies it while writing the output. Returns how many Adds were folded.
    """
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    consumers: dict[str, list] = {}
    for n in g.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    folded, drop = 0, []
    for mm in [n for n in g.node if n.op_type == "MatMulIntegerToFloat" and len(n.input) < 7]:
        users = consumers.get(mm.output[0], [])
        if len(users) != 1 or users[0].op_type != "Add":
            continue
        add = users[0]
        bias = next((i for i in add.input if i != mm.output[0]), None)
        if bias not in inits or inits[bias].ndim != 1:
            continue
        while len(mm.input) < 6:
            mm.input.append("")
        mm.input.append(bias)
        mm.output[0] = add.output[0]
        drop.append(add)
        folded += 1
    for n in drop:
        g.node.remove(n)
    return folded


GELU_OPS = ("Gelu", "BiasGelu", "FastGelu", "QuickGelu")


def dynamic_activations(model, which: str) -> int:
    """After ORT's optimizer: ``MatMulIntegerToFloat(QuantizeLinear(x), W)`` -> ``DynamicQuantizeMatMul(x, W)``,
    which quantizes ``x`` inside the GEMM on each call to asymmetric uint8 over the min/max of the whole tensor
    (every row, token and padding position of the batch) instead of on the calibrated grid. So nothing is
    clipped, but one outlier token sets the step for the whole tensor, and a sample's result can depend on the
    rest of its batch. ``which``: ``post_gelu`` (only GEMMs whose input is a GELU's output: the FFN
    down-projections, where a few tokens carry outlier activations that a calibrated range clips) or ``all``.
    Constant weights only; weights, their scales and the bias are kept. Not exact. Returns how many GEMMs
    changed."""
    from onnx import helper

    g = model.graph
    prod = producers(g)
    weights = {i.name for i in g.initializer}
    changed = 0
    for mm in [n for n in g.node if n.op_type == "MatMulIntegerToFloat"]:
        q = prod.get(mm.input[0])
        if q is None or q.op_type != "QuantizeLinear" or len(mm.input) < 4 or mm.input[1] not in weights:
            continue
        src = prod.get(q.input[0])
        if which == "post_gelu" and (src is None or src.op_type not in GELU_OPS):
            continue
        _x, w, _x_scale, w_scale, _x_zp, w_zp, bias = list(mm.input) + [""] * (7 - len(mm.input))
        new = helper.make_node("DynamicQuantizeMatMul", [q.input[0], w, w_scale, w_zp, bias], list(mm.output),
                               name=f"{mm.name or mm.output[0]}_dynamic", domain="com.microsoft")
        g.node.insert(list(g.node).index(mm), new)
        g.node.remove(mm)
        changed += 1
    # a QuantizeLinear that fed only converted GEMMs (one may feed several) has no reader left
    read = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    for q in [n for n in g.node if n.op_type == "QuantizeLinear" and n.output[0] not in read]:
        g.node.remove(q)
    return changed


def int8_embedding_tables(graph, min_rows: int = EMBEDDING_MIN_ROWS) -> dict[str, Any]:
    """Store large embedding tables as int8 with one scale per row, gathered before dequantizing:
    ``Gather(W, ids)`` -> ``Cast(Gather(W_int8, ids)) * Gather(row_scale, ids)``. Only the looked-up rows
    are dequantized, so the engine file shrinks by ~3/4 of the table at no run-time cost. A symmetric
    per-row grid (``edgeft.quant.grid``): exact up to float rounding for a model whose tables the finetune
    stage already put on that grid (``snap_embeddings``), lossy otherwise (the largest error is reported)."""
    from onnx import TensorProto, helper, numpy_helper

    inits = {i.name: i for i in graph.initializer}
    changed, worst = 0, 0.0
    for node in [n for n in graph.node if n.op_type == "Gather"]:
        table = inits.get(node.input[0])
        if table is None or len(table.dims) != 2 or table.dims[0] < min_rows or table.data_type != TensorProto.FLOAT:
            continue
        if any(a.name == "axis" and a.i != 0 for a in node.attribute):
            continue
        w = numpy_helper.to_array(table)
        q, scale = per_row_int8(w)
        worst = max(worst, float(np.abs(q * scale - w).max()))
        base, out = node.input[0], node.output[0]
        graph.initializer.remove(table)
        graph.initializer.extend([numpy_helper.from_array(q, f"{base}_int8"),
                                  numpy_helper.from_array(scale.astype(np.float32), f"{base}_row_scale")])
        idx = list(graph.node).index(node)
        graph.node.remove(node)
        new = [helper.make_node("Gather", [f"{base}_int8", node.input[1]], [f"{out}_q"], name=f"{node.name}_int8"),
               helper.make_node("Gather", [f"{base}_row_scale", node.input[1]], [f"{out}_s"], name=f"{node.name}_scale"),
               helper.make_node("Cast", [f"{out}_q"], [f"{out}_f"], to=TensorProto.FLOAT, name=f"{node.name}_cast"),
               helper.make_node("Mul", [f"{out}_f", f"{out}_s"], [out], name=f"{node.name}_dequant")]
        for k, n in enumerate(new):
            graph.node.insert(idx + k, n)
        changed += 1
    return {"int8_embedding_tables": changed, "embedding_max_abs_error": worst}


def quantize_gemm_bias(graph) -> int:
    """``Gemm(DQ(x), DQ(w), b)`` runs as ORT's int8 ``QGemm`` only with the bias as int32 on the
    ``s_x * s_w`` grid (as ORT's own quantizer writes it): add that DQ. Returns Gemms changed."""
    from onnx import helper, numpy_helper

    consts, prod = constants_through_identity(graph), producers(graph)
    changed = 0
    for g in [n for n in graph.node if n.op_type == "Gemm" and len(n.input) == 3 and n.input[2] in consts]:
        dx, dw = prod.get(g.input[0]), prod.get(g.input[1])
        if any(d is None or d.op_type != "DequantizeLinear" or d.input[1] not in consts for d in (dx, dw)):
            continue
        if _attr(g, "transB", 0) != 1 or _attr(g, "transA", 0) != 0 or _attr(g, "beta", 1.0) != 1.0:
            continue
        sx, sw, b = consts[dx.input[1]], consts[dw.input[1]], consts[g.input[2]]
        if sx.size != 1 or b.ndim != 1 or sw.size not in (1, b.size) or (sw.size > 1 and _attr(dw, "axis", 1) != 0):
            continue
        scale = (float(sx) * sw.astype(np.float64)).reshape(-1)
        scale = np.broadcast_to(scale, b.shape) if scale.size == 1 else scale
        q = np.clip(np.rint(b / scale), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
        base = f"{g.name or g.output[0]}_bias_int32"
        graph.initializer.extend([numpy_helper.from_array(q, base),
                                  numpy_helper.from_array(scale.astype(np.float32), f"{base}_scale"),
                                  numpy_helper.from_array(np.zeros_like(q), f"{base}_zp")])
        graph.node.insert(list(graph.node).index(g), helper.make_node(
            "DequantizeLinear", [base, f"{base}_scale", f"{base}_zp"], [f"{base}_dq"], name=f"{base}_DQ", axis=0))
        g.input[2] = f"{base}_dq"
        changed += 1
    return changed
