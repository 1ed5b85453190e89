"""pack_attention on small hand-built graphs: self-attention is packed and computes the same; attention
whose q reads another tensor than k and v (cross-attention) is left alone."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeft.backends.ort_fusions import pack_attention

HIDDEN, HEADS, SEQ = 8, 2, 5


def _graph(q_source: str):
    rng = np.random.default_rng(0)
    inits, nodes = [], []
    for name, src in (("q", q_source), ("k", "x"), ("v", "x")):
        inits += [numpy_helper.from_array(rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32), f"W{name}"),
                  numpy_helper.from_array(rng.standard_normal(HIDDEN).astype(np.float32), f"b{name}")]
        nodes += [helper.make_node("MatMul", [src, f"W{name}"], [f"{name}_mm"]),
                  helper.make_node("Add", [f"{name}_mm", f"b{name}"], [name])]
    nodes.append(helper.make_node("MultiHeadAttention", ["q", "k", "v", "", "mask"], ["out"],
                                  domain="com.microsoft", num_heads=HEADS, name="mha"))
    f32 = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, SEQ, HIDDEN])  # noqa: E731
    graph = helper.make_graph(nodes, "g", [f32("x"), f32("y"),
                                           helper.make_tensor_value_info("mask", TensorProto.INT32, [1, SEQ])],
                              [f32("out")], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                             ir_version=8)                     # any ORT >= 1.20 loads it


def _run(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["out"], {i.name: feeds[i.name] for i in sess.get_inputs()})[0]


def test_self_attention_is_packed_into_attention_and_computes_the_same():
    model = _graph("x")
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((1, SEQ, HIDDEN)).astype(np.float32),
             "y": rng.standard_normal((1, SEQ, HIDDEN)).astype(np.float32),
             "mask": np.array([[1, 1, 1, 0, 0]], np.int32)}          # two padded keys
    before = _run(model, feeds)
    assert pack_attention(model) == {"int8": 0, "float": 1}
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Attention"] and len(model.graph.initializer) == 2
    np.testing.assert_allclose(_run(model, feeds), before, atol=1e-5)


def test_cross_attention_is_left_alone():
    model = _graph("y")
    assert pack_attention(model) == {"int8": 0, "float": 0}
    assert [n.op_type for n in model.graph.node].count("MultiHeadAttention") == 1
