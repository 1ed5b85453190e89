"""Transformer fusions ONNX Runtime's own optimizers do not make on a Q/DQ graph.

``fuse_attention``: the scaled-dot-product attention that transformers exports (per layer: Reshape and
Transpose of the projected q, k, v; both scaled by sqrt(1/sqrt(head_size)); MatMul; additive mask;
Softmax; MatMul; Transpose; Reshape) becomes one ``com.microsoft.MultiHeadAttention`` node fed by the
q, k, v projections, with the model's ``attention_mask`` as the key padding mask. ORT's C++ optimizer has
no attention fusion, and its Python optimizer's needs float weights on the projections, which a Q/DQ
graph does not have. The int8 projections and everything around them stay as they are.

Measured on the default MiniLM INT8 engine (this machine, batch 1, sequence 128): p50 5.42 -> 5.15 ms;
on 300 padded test inputs 97.7% of the logits were bitwise equal to the unfused engine's and all top-1
equal (the rest moved by an int8 step downstream). FP32: max logit difference 4.8e-7.
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
