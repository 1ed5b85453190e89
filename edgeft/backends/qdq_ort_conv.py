"""Complete a ModelOpt Q/DQ CNN graph so ONNX Runtime's CPU kernels run its convolutions in int8.

ModelOpt places Q/DQ where TensorRT wants them: on each Conv's input and weight, nothing on its output.
ONNX Runtime fuses a Conv into ``QLinearConv`` only as a whole unit ``DQ -> Conv -> Q`` (and a residual
``Add`` into ``QLinearAdd`` only as ``DQ, DQ -> Add -> Q``); without the output Q the Conv runs in float
on dequantized weights, slower than the FP32 model (docs/design.md). The passes, in order:

1. ``fold_batchnorm``: ``Conv(DQ(w)) -> BatchNormalization`` becomes one Conv. With per-output-channel
   weight scales the fold is exact on the int8 grid: the int8 weights stay, the BN factor goes into the
   channel's scale (its sign into the int8 values) and the BN shift into the bias.
2. ``unify_quantizers``: a Relu/MaxPool/Add output read by several quantizers (next conv, downsample,
   pool) keeps the widest one; its float readers (the residual's identity branch) read that quantizer's
   DQ, so a Relu has one consumer, a Q, and ORT drops it (a u8 Q at zero point 0 already clips at 0).
   ``match_maxpool_scales``: the Q after a MaxPool takes the scale of the DQ before it (exact: a max is
   one of its inputs), so ORT runs the pool on int8.
3. ``insert_missing_qdq``: Conv outputs and residual ``Add`` inputs/outputs with no quantizer get a u8
   Q/DQ, its range calibrated by running the graph on ``calibration_inputs`` (max/min seen).

Not exact (the engine is verified against the baseline like any other): the residual identity branch
is read through its quantizer, and the new output quantizers add rounding QAT did not see.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from edgeft.backends.onnx_graph import attr as _attr
from edgeft.backends.onnx_graph import constants_through_identity as _consts
from edgeft.backends.onnx_graph import consumers as _consumers
from edgeft.backends.onnx_graph import producers as _producers
from edgeft.backends.onnx_graph import prune_dead, topological_sort


def has_quantized_conv(graph) -> bool:
    prod = _producers(graph)
    return any(n.op_type == "Conv" and getattr(prod.get(n.input[1]), "op_type", "") == "DequantizeLinear"
               for n in graph.node)


def _int8_weight(dq, prod, consts) -> np.ndarray | None:
    """The int8 values behind ``DQ(Q(W))`` or ``DQ(W_int8)``."""
    src = dq.input[0]
    if src in consts and consts[src].dtype == np.int8:
        return consts[src]
    q = prod.get(src)
    if q is None or q.op_type != "QuantizeLinear" or q.input[0] not in consts:
        return None
    w, s = consts[q.input[0]], consts[q.input[1]]
    zp = consts.get(q.input[2]) if len(q.input) > 2 else None
    if zp is not None and np.any(zp != 0):
        return None
    axis = _attr(q, "axis", 1)
    shape = [1] * w.ndim
    if s.size > 1:
        shape[axis] = -1
    return np.clip(np.rint(w / s.reshape(shape)), -128, 127).astype(np.int8)


def fold_batchnorm(graph) -> int:
    from onnx import helper, numpy_helper

    consts, prod, cons = _consts(graph), _producers(graph), _consumers(graph)
    folded = 0
    for bn in [n for n in graph.node if n.op_type == "BatchNormalization"]:
        conv = prod.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or len(cons.get(conv.output[0], [])) != 1:
            continue
        if not all(i in consts for i in bn.input[1:5]):
            continue
        dq = prod.get(conv.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[1] not in consts:
            continue
        q = _int8_weight(dq, prod, consts)
        s = consts[dq.input[1]]
        if q is None or s.size != q.shape[0] or _attr(dq, "axis", 1) != 0:
            continue   # per-tensor weight scales: no exact fold, leave it to ORT
        gamma, beta, mean, var = (consts[i].astype(np.float64) for i in bn.input[1:5])
        k = gamma / np.sqrt(var + _attr(bn, "epsilon", 1e-5))
        sign = np.where(k < 0, -1, 1).astype(np.int16)
        q2 = np.clip(q.astype(np.int16) * sign.reshape(-1, *[1] * (q.ndim - 1)), -127, 127).astype(np.int8)
        bias = consts[conv.input[2]].astype(np.float64) if len(conv.input) > 2 and conv.input[2] else 0.0
        base = f"{conv.name or conv.output[0]}_bnfold"
        graph.initializer.extend([
            numpy_helper.from_array(q2, f"{base}_w_int8"),
            numpy_helper.from_array((s * np.abs(k)).astype(np.float32), f"{base}_w_scale"),
            numpy_helper.from_array(np.zeros(q2.shape[0], np.int8), f"{base}_w_zp"),
            numpy_helper.from_array(((bias - mean) * k + beta).astype(np.float32), f"{base}_bias")])
        new_dq = helper.make_node("DequantizeLinear", [f"{base}_w_int8", f"{base}_w_scale", f"{base}_w_zp"],
                                  [f"{base}_w"], name=f"{base}_w_dq", axis=0)
        graph.node.insert(list(graph.node).index(conv), new_dq)
        conv.input[1] = f"{base}_w"
        if len(conv.input) > 2:
            conv.input[2] = f"{base}_bias"
        else:
            conv.input.append(f"{base}_bias")
        conv.output[0] = bn.output[0]
        graph.node.remove(bn)
        folded += 1
    return folded


def _reroute(graph, old: str, new: str, keep: Iterable = ()) -> None:
    keep_ids = {id(n) for n in keep}
    for n in graph.node:
        if id(n) in keep_ids:
            continue
        for i, name in enumerate(n.input):
            if name == old:
                n.input[i] = new


def unify_quantizers(graph) -> int:
    """Give each quantized activation a single Q, read by every Add that used the float tensor.

    Returns how many tensors were changed. A Relu output is read only through its Q afterwards, so ORT
    drops the Relu into the producer's int8 unit.
    """
    consts, cons, prod = _consts(graph), _consumers(graph), _producers(graph)
    outputs = {o.name for o in graph.output}
    done = 0
    for t in [n.output[0] for n in graph.node if n.op_type in ("Relu", "MaxPool", "Add")]:
        qs = [n for n in cons.get(t, []) if n.op_type == "QuantizeLinear" and n.input[1] in consts]
        if not qs or t in outputs:
            continue
        keep = max(qs, key=lambda q: float(np.max(consts[q.input[1]])))
        dqs = [d for d in cons.get(keep.output[0], []) if d.op_type == "DequantizeLinear"]
        if not dqs:
            continue
        dq = dqs[0].output[0]
        for q in qs:
            if q is keep:
                continue
            for d in cons.get(q.output[0], []):
                if d.op_type == "DequantizeLinear":
                    _reroute(graph, d.output[0], dq)
                    graph.node.remove(d)
            graph.node.remove(q)
        relu = prod[t].op_type == "Relu"
        for reader in [n for n in cons.get(t, []) if n.op_type != "QuantizeLinear"]:
            if reader.op_type == "Cast":   # ModelOpt's float->float cast of the same tensor
                _reroute(graph, reader.output[0], dq)
                graph.node.remove(reader)
            elif relu or reader.op_type == "Add":
                for i, name in enumerate(reader.input):
                    if name == t:
                        reader.input[i] = dq
        done += 1
        cons = _consumers(graph)
    return done


def match_maxpool_scales(graph) -> int:
    """``DQ(s1) -> MaxPool -> Q(s2)``: ORT runs MaxPool on int8 only when s1 == s2. The max of a window
    is one of its inputs, so the output fits the input's grid exactly: use (s1, z1) for the Q after."""
    cons, prod = _consumers(graph), _producers(graph)
    changed = 0
    for mp in [n for n in graph.node if n.op_type == "MaxPool"]:
        dq = prod.get(mp.input[0])
        readers = cons.get(mp.output[0], [])
        if dq is None or dq.op_type != "DequantizeLinear" or len(readers) != 1 or readers[0].op_type != "QuantizeLinear":
            continue
        q = readers[0]
        if list(q.input[1:]) == list(dq.input[1:]):
            continue
        for n in [q, *cons.get(q.output[0], [])]:
            if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
                del n.input[1:]
                n.input.extend(dq.input[1:])
        changed += 1
    return changed


def _quantized(tensor: str, prod, cons) -> bool:
    """Whether ``tensor`` reaches a Q directly or through a Relu whose only reader is a Q."""
    readers = cons.get(tensor, [])
    if readers and all(r.op_type == "QuantizeLinear" for r in readers):
        return True
    if len(readers) == 1 and readers[0].op_type == "Relu":
        after = cons.get(readers[0].output[0], [])
        return len(after) == 1 and after[0].op_type == "QuantizeLinear"
    return False


def _dq_input(tensor: str, prod) -> bool:
    p = prod.get(tensor)
    return p is not None and p.op_type == "DequantizeLinear"


def plan_missing_qdq(graph) -> list[str]:
    """The tensors that need a new quantizer for ORT's Conv/Add int8 units."""
    prod, cons = _producers(graph), _consumers(graph)
    outputs = {o.name for o in graph.output}
    need: list[str] = []

    def add(t: str) -> None:
        if t not in need and t not in outputs:
            need.append(t)

    for n in graph.node:
        if n.op_type == "Conv" and _dq_input(n.input[0], prod) and _dq_input(n.input[1], prod):
            t = n.output[0]
            if not _quantized(t, prod, cons):
                readers = cons.get(t, [])
                add(readers[0].output[0] if len(readers) == 1 and readers[0].op_type == "Relu" else t)
    quantized_later = set(need)
    for n in graph.node:
        if n.op_type != "Add" or len(n.input) != 2:
            continue
        srcs = [prod.get(i) for i in n.input]
        if any(s is None or s.op_type not in ("Conv", "DequantizeLinear") for s in srcs):
            continue
        if not any(i in quantized_later or _dq_input(i, prod) for i in n.input):
            continue
        for i in n.input:
            if not _dq_input(i, prod):
                add(i)
        if not _quantized(n.output[0], prod, cons):
            readers = cons.get(n.output[0], [])
            add(readers[0].output[0] if len(readers) == 1 and readers[0].op_type == "Relu" else n.output[0])
    return need


def calibrate_ranges(model, tensors: list[str], feeds: Iterable[dict[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
    """Run the graph with ``tensors`` as extra outputs; the (min, max) each took over ``feeds``."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    probe.graph.output.extend([onnx.helper.make_empty_tensor_value_info(t) for t in tensors if t not in have])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    lo = {t: np.inf for t in tensors}
    hi = {t: -np.inf for t in tensors}
    for feed in feeds:
        values = dict(zip(names, sess.run(None, {k: v for k, v in feed.items() if k in wanted})))
        for t in tensors:
            lo[t] = min(lo[t], float(values[t].min()))
            hi[t] = max(hi[t], float(values[t].max()))
    return {t: (lo[t], hi[t]) for t in tensors}


def insert_qdq(graph, ranges: dict[str, tuple[float, float]]) -> int:
    """A u8 asymmetric Q/DQ (range widened to include 0) after each tensor in ``ranges``."""
    from onnx import helper, numpy_helper

    for t, (lo, hi) in ranges.items():
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = (hi - lo) / 255.0 or 1.0
        zp = int(np.clip(np.rint(-lo / scale), 0, 255))
        base = f"{t}_ortq"
        graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{base}_scale"),
                                  numpy_helper.from_array(np.array(zp, np.uint8), f"{base}_zp")])
        q = helper.make_node("QuantizeLinear", [t, f"{base}_scale", f"{base}_zp"], [f"{base}_q"], name=f"{base}_Q")
        dq = helper.make_node("DequantizeLinear", [f"{base}_q", f"{base}_scale", f"{base}_zp"], [f"{base}_dq"],
                              name=f"{base}_DQ")
        _reroute(graph, t, f"{base}_dq")
        prod = _producers(graph)
        at = list(graph.node).index(prod[t]) + 1 if t in prod else 0
        graph.node.insert(at, dq)
        graph.node.insert(at, q)
    return len(ranges)


def complete_conv_qdq(model, feeds: Iterable[dict[str, np.ndarray]]) -> dict[str, Any]:
    """All passes in place on an ``onnx.ModelProto``; returns what changed."""
    g = model.graph
    folded = fold_batchnorm(g)
    unified = unify_quantizers(g)
    pools = match_maxpool_scales(g)
    prune_dead(g)
    need = plan_missing_qdq(g)
    topological_sort(g)
    inserted = insert_qdq(g, calibrate_ranges(model, need, feeds)) if need else 0
    topological_sort(g)
    return {"batchnorm_folded": folded, "single_quantizer": unified, "maxpool_scales_matched": pools, "output_qdq_inserted": inserted}
