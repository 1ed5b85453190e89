"""The ORT CNN Q/DQ completion passes on small hand-built graphs, checked by running them in ONNX Runtime."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeft.backends import qdq_ort_conv
from edgeft.backends.ort_passes import rewrite_for_ort
from edgeft.backends.qdq_ort import _constants, to_unsigned_activations

C_IN, C_OUT = 3, 4


def _conv_bn_relu_model(gamma: np.ndarray) -> onnx.ModelProto:
    """x -> Q/DQ -> Conv(DQ(Q(W)) per-channel) -> BatchNorm -> Relu -> Q/DQ -> MaxPool -> Q/DQ -> y"""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(C_OUT, C_IN, 3, 3)).astype(np.float32)
    w_scale = (np.abs(w).reshape(C_OUT, -1).max(1) / 127).astype(np.float32)
    inits = [
        numpy_helper.from_array(w, "W"), numpy_helper.from_array(w_scale, "w_s"),
        numpy_helper.from_array(np.zeros(C_OUT, np.int8), "w_z"),
        numpy_helper.from_array(np.array(0.05, np.float32), "x_s"), numpy_helper.from_array(np.array(0, np.int8), "x_z"),
        numpy_helper.from_array(np.array(0.04, np.float32), "r_s"), numpy_helper.from_array(np.array(0, np.int8), "r_z"),
        numpy_helper.from_array(np.array(0.03, np.float32), "p_s"), numpy_helper.from_array(np.array(0, np.int8), "p_z"),
        numpy_helper.from_array(rng.normal(size=C_OUT).astype(np.float32), "conv_b"),
        numpy_helper.from_array(gamma.astype(np.float32), "g"),
        numpy_helper.from_array(rng.normal(size=C_OUT).astype(np.float32), "beta"),
        numpy_helper.from_array(rng.normal(size=C_OUT).astype(np.float32), "mean"),
        numpy_helper.from_array(rng.uniform(0.5, 2, size=C_OUT).astype(np.float32), "var"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xd"]),
        helper.make_node("QuantizeLinear", ["W", "w_s", "w_z"], ["wq"], axis=0),
        helper.make_node("DequantizeLinear", ["wq", "w_s", "w_z"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd", "conv_b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("BatchNormalization", ["c", "g", "beta", "mean", "var"], ["bn"], epsilon=1e-5),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "r_s", "r_z"], ["rq"]),
        helper.make_node("DequantizeLinear", ["rq", "r_s", "r_z"], ["rd"]),
        helper.make_node("MaxPool", ["rd"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("QuantizeLinear", ["p", "p_s", "p_z"], ["pq"]),
        helper.make_node("DequantizeLinear", ["pq", "p_s", "p_z"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C_IN, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C_OUT, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # any ORT >= 1.20 loads it


def _run(model, x, level="disable", path=None):
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if level == "disable"
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    if path:
        so.optimized_model_filepath = str(path)
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _pre_relu(model, x):
    """The Conv+BN output (before Relu and its quantizer), as a graph output, computed as written
    (ORT's optimizer would round the bias onto the int32 grid)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_empty_tensor_value_info("bn"))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(["bn"], {"x": x})[0]


def test_batchnorm_fold_is_exact_on_the_int8_grid_even_with_negative_gamma():
    x = np.random.default_rng(1).normal(size=(1, C_IN, 8, 8)).astype(np.float32)
    model = _conv_bn_relu_model(np.array([1.5, -0.7, 0.2, -2.0]))
    before = _pre_relu(model, x)
    assert qdq_ort_conv.fold_batchnorm(model.graph) == 1
    assert not [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    folded_w = next(i for i in model.graph.initializer if i.name.endswith("_w_int8"))
    assert numpy_helper.to_array(folded_w).dtype == np.int8   # weights stay int8, BN went into the scales
    np.testing.assert_allclose(_pre_relu(model, x), before, rtol=1e-5, atol=1e-5)


def test_relu_and_maxpool_quantizers_become_unsigned_with_matching_scales():
    model = _conv_bn_relu_model(np.array([1.0, 1.0, 1.0, 1.0]))
    assert qdq_ort_conv.match_maxpool_scales(model.graph) == 1
    to_unsigned_activations(model.graph, _constants(model.graph))
    consts = _constants(model.graph)
    qs = {n.input[0]: n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] != "W"}
    # a Relu output (and its max-pool) never goes negative: uint8 at zero point 0; the input x: zero point 128
    assert int(consts[qs["r"].input[2]]) == 0 and consts[qs["r"].input[2]].dtype == np.uint8
    assert qs["p"].input[1] == qs["r"].input[1]
    assert consts[qs["p"].input[2]] == consts[qs["r"].input[2]] and consts[qs["p"].input[2]].dtype == np.uint8
    assert int(consts[qs["x"].input[2]]) == 128


def test_completed_graph_runs_conv_and_pool_in_int8_kernels(tmp_path):
    rng = np.random.default_rng(2)
    model = _conv_bn_relu_model(np.array([1.0, 0.5, 2.0, 1.2]))
    x = rng.normal(size=(1, C_IN, 8, 8)).astype(np.float32)
    reference = _run(model, x)
    feeds = [{"x": rng.normal(size=(1, C_IN, 8, 8)).astype(np.float32)} for _ in range(4)]
    info = rewrite_for_ort(model, int8_embeddings=False, calibration_feeds=feeds)
    assert info["batchnorm_folded"] == 1 and info["maxpool_scales_matched"] == 1, info
    out = _run(model, x, level="extended", path=tmp_path / "opt.onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert "QLinearConv" in ops and "Conv" not in ops and "Relu" not in ops, ops
    # within one step of the Q/DQ model (the pool now keeps the 0.04 grid of the Relu quantizer); the
    # Q/DQ model clipped at 127 steps of 0.03, the engine's uint8 Relu output reaches 255 steps of 0.04
    clipped = reference >= 127 * 0.03 - 1e-6
    assert np.abs(out - reference)[~clipped].max() <= 0.04 + 1e-6
    assert (out[clipped] >= 127 * 0.03 - 0.04).all()


def test_conv_graph_without_calibration_inputs_says_it_was_not_completed():
    model = _conv_bn_relu_model(np.array([1.0, 1.0, 1.0, 1.0]))
    info = rewrite_for_ort(model, int8_embeddings=False)
    assert info["conv_qdq_completion"].startswith("skipped: no calibration inputs")
    assert [n for n in model.graph.node if n.op_type == "BatchNormalization"]
