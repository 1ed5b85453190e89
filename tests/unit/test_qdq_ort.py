"""qdq_ort.weights_to_7bit: the reduce_range rewrite of the u8s8_7bit flavour."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from edgeft.backends.onnx_graph import constants
from edgeft.backends.qdq_ort import weights_to_7bit


def _graph():
    """x (activation Q/DQ) @ w1 (Q/DQ of a float constant, per column) @ w2 (DQ of an int8 constant, per tensor)."""
    rng = np.random.default_rng(0)
    s1 = np.linspace(0.01, 0.02, 8).astype(np.float32)
    w1 = (rng.uniform(-127.4, 127.4, (16, 8)) * s1).astype(np.float32)     # anywhere on the 8-bit range
    w2 = np.arange(-128, 128, dtype=np.int8)[rng.permutation(256)[:64]].reshape(8, 8)
    init = [numpy_helper.from_array(v, n) for v, n in [
        (w1, "w1"), (s1, "s1"), (np.zeros(8, np.int8), "z1"), (w2, "w2"), (np.array(0.03, np.float32), "s2"),
        (np.array(0, np.int8), "z"), (np.array(0.1, np.float32), "xs")]]
    n = helper.make_node
    nodes = [n("QuantizeLinear", ["x", "xs", "z"], ["xq"]), n("DequantizeLinear", ["xq", "xs", "z"], ["xd"]),
             n("QuantizeLinear", ["w1", "s1", "z1"], ["w1q"], axis=1),
             n("DequantizeLinear", ["w1q", "s1", "z1"], ["w1d"], axis=1),
             n("MatMul", ["xd", "w1d"], ["h"]),
             n("DequantizeLinear", ["w2", "s2", "z"], ["w2d"]), n("MatMul", ["h", "w2d"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [4, 16])],
                          [helper.make_tensor_value_info("y", T.FLOAT, [4, 8])], init)
    return g, w1, s1, w2


def _dequantized(graph, dq_output):
    c = constants(graph)
    dq = next(x for x in graph.node if x.output[0] == dq_output)
    return c[dq.input[0]], c[dq.input[1]]


def test_weights_move_to_7_bits_at_twice_the_scale_within_one_8bit_step():
    g, w1, s1, w2 = _graph()
    result = weights_to_7bit(g, constants(g))
    assert result["weights_7bit"] == 2
    assert 0 < result["weight_7bit_max_step_error"] <= 0.5

    q1, scale1 = _dequantized(g, "w1d")
    assert q1.dtype == np.int8 and np.abs(q1).max() <= 64 and np.array_equal(scale1, s1 * 2)
    assert np.abs(q1 * scale1 - w1).max() <= s1.max() * 1.0 + 1e-7           # one 8-bit step at most
    # rounded from the float weight, not from its 8-bit value: the nearest 7-bit point
    assert np.array_equal(q1, np.rint(w1 / (2 * s1)).astype(np.int8))

    q2, scale2 = _dequantized(g, "w2d")
    assert np.abs(q2).max() <= 64 and float(scale2) == np.float32(0.06)
    assert np.abs(q2 * 2 - w2.astype(np.int16)).max() <= 1

    # the activation's Q/DQ keeps its 8-bit grid
    xs = next(x for x in g.node if x.output[0] == "xd")
    assert list(xs.input) == ["xq", "xs", "z"]


def test_asymmetric_or_unsigned_weights_are_left_alone():
    g, *_ = _graph()
    c = {i.name: i for i in g.initializer}
    c["z1"].CopyFrom(numpy_helper.from_array(np.full(8, 3, np.int8), "z1"))     # not symmetric: not ours to regrid
    result = weights_to_7bit(g, constants(g))
    assert result["weights_7bit"] == 1
    dq = next(x for x in g.node if x.output[0] == "w1d")
    assert dq.input[0] == "w1q"


def test_only_weights_of_matmul_gemm_conv_move_and_a_missing_zero_point_counts_as_zero():
    from onnx import helper as h

    w = np.arange(-128, 128, dtype=np.int8).reshape(16, 16)
    init = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(0.5, np.float32), "s"),
            numpy_helper.from_array(w.copy(), "table"), numpy_helper.from_array(np.array([1, 2], np.int64), "ids")]
    nodes = [h.make_node("DequantizeLinear", ["w", "s"], ["wd"]),            # no zero point: 0
             h.make_node("MatMul", ["x", "wd"], ["y"]),
             h.make_node("DequantizeLinear", ["table", "s"], ["td"]),        # read by a Gather: left alone
             h.make_node("Gather", ["td", "ids"], ["e"])]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [2, 16])],
                     [h.make_tensor_value_info("y", T.FLOAT, None), h.make_tensor_value_info("e", T.FLOAT, None)], init)
    assert weights_to_7bit(g, constants(g))["weights_7bit"] == 1
    moved, table = [n for n in g.node if n.op_type == "DequantizeLinear"]
    assert moved.input[0].endswith("_w7") and np.abs(constants(g)[moved.input[0]]).max() <= 64
    assert list(table.input) == ["table", "s"]


def test_a_gemm_with_an_int32_bias_on_the_weight_grid_keeps_its_weights():
    from onnx import helper as h

    w = np.arange(-64, 64, dtype=np.int8).reshape(8, 16)
    init = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(0.5, np.float32), "s"),
            numpy_helper.from_array(np.array(0, np.int8), "z"),
            numpy_helper.from_array(np.arange(8, dtype=np.int32), "b32"),
            numpy_helper.from_array(np.array(0.05, np.float32), "bs"), numpy_helper.from_array(np.array(0, np.int32), "bz")]
    nodes = [h.make_node("DequantizeLinear", ["w", "s", "z"], ["wd"]),
             h.make_node("DequantizeLinear", ["b32", "bs", "bz"], ["bd"]),
             h.make_node("Gemm", ["x", "wd", "bd"], ["y"], transB=1)]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [2, 16])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], init)
    r = weights_to_7bit(g, constants(g))
    assert r["weights_7bit"] == 0 and r["weights_7bit_kept_for_int32_bias"] == 1
    assert g.node[0].input[0] == "w"


def test_dynamic_activations_converts_constant_weight_gemms_and_drops_their_shared_quantizer():
    from onnx import helper as h

    from edgeft.backends.qdq_ort import dynamic_activations

    w = np.ones((16, 8), np.int8)
    init = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(0.1, np.float32), "xs"),
            numpy_helper.from_array(np.array(128, np.uint8), "xz"), numpy_helper.from_array(np.full(8, 0.01, np.float32), "ws"),
            numpy_helper.from_array(np.zeros(8, np.int8), "wz")]
    mm = lambda b, o: h.make_node("MatMulIntegerToFloat", ["xq", b, "xs", "ws", "xz", "wz"], [o],  # noqa: E731
                                  domain="com.microsoft")
    nodes = [h.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]), mm("w", "y1"), mm("w", "y2"),
             h.make_node("QuantizeLinear", ["x2", "xs", "xz"], ["x2q"]),
             h.make_node("MatMulIntegerToFloat", ["xq", "x2q", "xs", "xs", "xz", "xz"], ["y3"], domain="com.microsoft")]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [2, 16]), h.make_tensor_value_info("x2", T.FLOAT, [16, 8])],
                     [h.make_tensor_value_info(n, T.FLOAT, None) for n in ("y1", "y2", "y3")], init)
    model = helper.make_model(g)
    assert dynamic_activations(model, "all") == 2                       # y3 multiplies two activations: kept
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("DynamicQuantizeMatMul") == 2 and ops.count("MatMulIntegerToFloat") == 1
    assert ops.count("QuantizeLinear") == 2                              # xq still feeds y3
    model.graph.node.remove(next(n for n in model.graph.node if n.output[0] == "y3"))
    model.graph.output.pop()
    assert dynamic_activations(model, "all") == 0
    # with nothing reading it any more, the shared quantizer goes (x2's too)
    assert [n.op_type for n in model.graph.node].count("QuantizeLinear") == 0
