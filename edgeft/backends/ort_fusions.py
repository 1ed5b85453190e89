"""Transformer fusions ONNX Runtime's own optimizers do not make on a Q/DQ graph.

``fuse_attention``: the scaled-dot-product attention that transformers exports (per layer: Reshape and
Transpose of the projected q, k, v; both scaled by sqrt(1/sqrt(head_size)); MatMul; additive mask;
Softmax; MatMul; Transpose; Reshape) becomes one ``com.microsoft.MultiHeadAttention`` node fed by the
q, k, v projections, with the model's ``attention_mask`` as the key padding mask. ORT's C++ optimizer has
no attention fusion, and its Python optimizer's needs float weights on the projections, which a Q/DQ
graph does not have. The int8 projections and everything around them stay as they are. What it
saves and changes is measured in docs/design.md.
"""
from __future__ import annotations


import numpy as np

from edgeft.backends.onnx_graph import constants as _constants
from edgeft.backends.onnx_graph import consumers as _consumers
from edgeft.backends.onnx_graph import producers as _producers
from edgeft.backends.onnx_graph import prune_dead, topological_sort

MASK_INPUT = "attention_mask"


def _chain(name: str, ops: list[str], prod) -> tuple[str | None, list]:
    """Follow first inputs up through ``ops`` (in order); the tensor above them, and the nodes."""
    nodes = []
    for op in ops:
        n = prod.get(name)
        if n is None or n.op_type != op:
            return None, []
        nodes.append(n)
        name = n.input[0]
    return name, nodes


def _perm(node) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), [])


def _heads(reshape, prod, consts) -> tuple[int, int] | None:
    """(heads, head_size) from the Reshape target ``[batch, seq, heads, head_size]`` (Concat or constant)."""
    shape = reshape.input[1]
    if shape in consts and consts[shape].size == 4:
        return int(consts[shape][2]), int(consts[shape][3])
    concat = prod.get(shape)
    if concat is None or concat.op_type != "Concat" or len(concat.input) != 4:
        return None
    if not all(i in consts for i in concat.input[2:]):
        return None
    return tuple(int(np.asarray(consts[i]).reshape(-1)[0]) for i in concat.input[2:])


def _default_scale(muls, head_size: int, consts) -> bool:
    """Both q and k are scaled by head_size**-0.25 (as a constant, or computed from the shape at run
    time, which is how torch exports SDPA's default scale): MultiHeadAttention's default."""
    for m in muls:
        other = m.input[1]
        if other in consts and not np.allclose(consts[other], head_size ** -0.25, rtol=1e-4):
            return False
    return True


def fuse_attention(model) -> int:
    """Fuse every matching attention block in place; returns how many were fused."""
    from onnx import TensorProto, helper

    g = model.graph
    if MASK_INPUT not in {i.name for i in g.input}:
        return 0
    prod, cons, consts = _producers(g), _consumers(g), _constants(g)
    mask = f"{MASK_INPUT}_int32_for_mha"
    fused = 0
    for sm in [n for n in g.node if n.op_type == "Softmax"]:
        add = prod.get(sm.input[0])
        if add is None or add.op_type != "Add":
            continue
        scores = next((prod[i] for i in add.input if i in prod and prod[i].op_type == "MatMul"), None)
        if scores is None:
            continue
        q, q_nodes = _chain(scores.input[0], ["Mul", "Transpose", "Reshape"], prod)
        k, k_nodes = _chain(scores.input[1], ["Mul", "Transpose", "Reshape"], prod)
        readers = cons.get(sm.output[0], [])
        if q is None or k is None or len(readers) != 1 or readers[0].op_type != "MatMul":
            continue
        context = readers[0]
        v, v_nodes = _chain(context.input[1], ["Transpose", "Reshape"], prod)
        after = cons.get(context.output[0], [])
        if v is None or len(after) != 1 or after[0].op_type != "Transpose" or _perm(after[0]) != [0, 2, 1, 3]:
            continue
        merge = cons.get(after[0].output[0], [])
        if len(merge) != 1 or merge[0].op_type != "Reshape":
            continue
        if (_perm(q_nodes[1]), _perm(k_nodes[1]), _perm(v_nodes[0])) != ([0, 2, 1, 3], [0, 2, 3, 1], [0, 2, 1, 3]):
            continue
        dims = _heads(q_nodes[2], prod, consts)
        if not dims or not _default_scale([q_nodes[0], k_nodes[0]], dims[1], consts):
            continue
        if fused == 0:
            g.node.insert(0, helper.make_node("Cast", [MASK_INPUT], [mask], to=TensorProto.INT32,
                                              name="attention_mask_to_int32"))
        out = merge[0].output[0]
        merge[0].output[0] = f"{out}_unfused"
        g.node.insert(list(g.node).index(merge[0]), helper.make_node(
            "MultiHeadAttention", [q, k, v, "", mask], [out], name=f"{sm.name}_MultiHeadAttention",
            domain="com.microsoft", num_heads=dims[0]))
        fused += 1
    if fused:
        if not any(o.domain == "com.microsoft" for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
        prune_dead(g)
        topological_sort(g)
    return fused


def _int8_projection(node, consts):
    """(A, a_scale, a_zero_point, W, w_scale, w_zero_point, bias) of an int8 ``MatMulIntegerToFloat``
    whose weights, scales and bias are constants and whose activation is uint8; else None."""
    if node is None or node.op_type != "MatMulIntegerToFloat" or len(node.input) < 5:
        return None
    ins = list(node.input) + [""] * (7 - len(node.input))
    a, w, a_scale, w_scale, a_zp, w_zp, bias = ins
    if not (a_zp in consts and consts[a_zp].dtype == np.uint8 and w in consts and consts[w].dtype in (np.int8, np.uint8)
            and w_scale in consts and (not w_zp or w_zp in consts) and (not bias or bias in consts)):
        return None
    if consts[w].ndim != 2 or (bias and consts[bias].shape != consts[w].shape[1:]):
        return None
    cols = consts[w].shape[1]
    return (a, a_scale, a_zp, consts[w], np.broadcast_to(consts[w_scale], (cols,)),
            np.broadcast_to(consts[w_zp], (cols,)) if w_zp else np.zeros(cols, consts[w].dtype),
            consts[bias] if bias else np.zeros(cols, np.float32))


def _float_projection(node, prod, consts):
    """(x, W, bias) of ``Add(MatMul(x, W), bias)`` with constant ``W`` and ``bias``; else None."""
    if node is None or node.op_type != "Add":
        return None
    mm = next((prod[i] for i in node.input if i in prod and prod[i].op_type == "MatMul"), None)
    bias = next((i for i in node.input if i in consts), None)
    if mm is None or bias is None or mm.input[1] not in consts or consts[mm.input[1]].ndim != 2:
        return None
    if consts[bias].shape != consts[mm.input[1]].shape[1:]:
        return None
    return mm.input[0], consts[mm.input[1]], consts[bias]


def pack_attention(model) -> dict[str, int]:
    """After ORT's optimizer: a ``MultiHeadAttention`` fed by three projections of one tensor becomes one
    node that computes q, k and v as a single GEMM over the concatenated weights, then attention:
    ``com.microsoft.QAttention`` over int8 ``MatMulIntegerToFloat`` projections (same uint8 input and
    scale; per-column weight scales kept), ``com.microsoft.Attention`` over float ``MatMul`` + ``Add``.
    Only self-attention with q, k, v of one width (what BERT-family encoders export); anything else is
    left as it is.

    QAttention computes the same int32 sums, scales and bias as the three projections (docs/design.md has
    the bitwise comparison and the time it saves).
    Returns ``{"int8": n, "float": m}``, how many of each were packed.
    """
    from onnx import helper, numpy_helper

    g = model.graph
    prod, cons, consts = _producers(g), _consumers(g), _constants(g)
    packed = {"int8": 0, "float": 0}
    for mha in [n for n in g.node if n.op_type == "MultiHeadAttention"]:
        if len(mha.input) < 3 or len(mha.input) > 5 or (len(mha.input) == 5 and mha.input[3]):
            continue                                  # packed already, or carries a bias/past: left as is
        attrs = {a.name: helper.get_attribute_value(a) for a in mha.attribute}
        if set(attrs) - {"num_heads", "unidirectional"} or attrs.get("unidirectional", 0):
            continue                                  # a custom scale or causal mask: not this pattern
        attrs = {"num_heads": attrs["num_heads"]}
        projs = [prod.get(t) for t in mha.input[:3]]
        if any(p is None or len(cons.get(p.output[0], [])) != 1 for p in projs):
            continue
        mask = mha.input[4] if len(mha.input) == 5 else ""
        base = mha.name or f"attention_{sum(packed.values())}"
        q8 = [_int8_projection(p, consts) for p in projs]
        one_input = all(q8) and len({(x, s, z, w.shape, w.dtype) for x, s, z, w, *_ in q8}) == 1
        if one_input and q8[0][1] in consts and consts[q8[0][1]].size == 1 and consts[q8[0][2]].size == 1:
            # one uint8 input with a per-tensor scale and zero point: what QAttention takes
            a, a_scale, a_zp = q8[0][:3]
            w = np.concatenate([p[3] for p in q8], 1)
            w_scale = np.concatenate([p[4] for p in q8]).astype(np.float32)
            w_zp = np.concatenate([p[5] for p in q8])
            bias = np.concatenate([p[6] for p in q8]).astype(np.float32)
            names = [f"{base}_qkv_weight", f"{base}_qkv_bias", f"{base}_qkv_weight_scale", f"{base}_qkv_weight_zp"]
            # symmetric weights (ModelOpt's): one scalar zero point (0 for int8, 128 for the u8u8 flavour)
            zp = w_zp[:1].reshape(()) if (w_zp == w_zp.flat[0]).all() else w_zp
            g.initializer.extend(numpy_helper.from_array(v, n) for v, n in zip((w, bias, w_scale, zp), names))
            node = helper.make_node("QAttention", [a, names[0], names[1], a_scale, names[2], mask, a_zp, names[3]],
                                    [mha.output[0]], name=f"{base}_packed", domain="com.microsoft", **attrs)
            packed["int8"] += 1
        else:
            fp = [_float_projection(p, prod, consts) for p in projs]
            if not all(fp) or len({(x, w.shape) for x, w, _ in fp}) != 1:
                continue
            names = [f"{base}_qkv_weight", f"{base}_qkv_bias"]
            g.initializer.extend([numpy_helper.from_array(np.concatenate([p[1] for p in fp], 1), names[0]),
                                  numpy_helper.from_array(np.concatenate([p[2] for p in fp]), names[1])])
            inputs = [fp[0][0], *names] + ([mask] if mask else [])
            node = helper.make_node("Attention", inputs, [mha.output[0]], name=f"{base}_packed",
                                    domain="com.microsoft", **attrs)
            packed["float"] += 1
        g.node.insert(list(g.node).index(mha), node)
        g.node.remove(mha)
    if sum(packed.values()):
        prune_dead(g)
        topological_sort(g)
    return packed
