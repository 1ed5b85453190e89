"""The TensorRT build code's parts that run without TensorRT: reading the engine inspector's JSON, the
version check the kit makes on the device, and the timing-cache key."""
from __future__ import annotations

import pytest

from edgeft.backends.trt_build import check_version, layer_precisions

# shaped like TensorRT 10's inspector output at DETAILED verbosity ("Format/Datatype", verbose format strings)
TRT10 = {"Layers": [
    {"Name": "qkv_gemm", "LayerType": "CaskGemmMatrixMultiply",
     "Inputs": [{"Name": "x_q", "Location": "Device", "Dimensions": [1, 128, 384],
                 "Format/Datatype": "Channel major INT8 format where channel % 32 == 0"}],
     "Outputs": [{"Name": "qkv", "Location": "Device", "Dimensions": [1, 128, 1152],
                  "Format/Datatype": "Row major linear FP16 format (kLINEAR)"}]},
    {"Name": "softmax", "LayerType": "Softmax",
     "Inputs": [{"Name": "s", "Format/Datatype": "Row major linear FP16 format (kLINEAR)"}],
     "Outputs": [{"Name": "p", "Format/Datatype": "Row major linear FP16 format (kLINEAR)"}]},
    {"Name": "cls", "LayerType": "CaskGemmMatrixMultiply",
     "Inputs": [{"Name": "h", "Format/Datatype": "Row major linear FP32 format (kLINEAR)"}],
     "Outputs": [{"Name": "logits", "Format/Datatype": "Row major linear FP32 format (kLINEAR)"}]},
]}
# TensorRT 11 reports the format and the data type as separate fields, with short type names
TRT11 = {"Layers": [
    {"Name": "qkv_gemm", "LayerType": "Gemm", "Inputs": [{"Name": "x_q", "Format": "Channel major", "DataType": "Int8"}],
     "Outputs": [{"Name": "qkv", "Format": "Row major linear", "DataType": "Half"}]},
    {"Name": "ln", "LayerType": "Normalization", "Inputs": [{"Name": "h", "Format": "Row major linear", "DataType": "Float"}],
     "Outputs": [{"Name": "o", "Format": "Row major linear", "DataType": "Float"}]},
    "a_layer_name_only",
]}


def test_inspector_json_of_tensorrt_10_is_read_from_each_layers_first_input():
    r = layer_precisions(TRT10)
    assert [layer["precision"] for layer in r["layers"]] == ["Int8", "Half", "Float"]
    assert r["by_precision"] == {"Int8": 1, "Half": 1, "Float": 1}


def test_inspector_json_of_tensorrt_11_is_read_too():
    r = layer_precisions(TRT11)
    assert [layer["precision"] for layer in r["layers"]] == ["Int8", "Float", "unknown"]


def test_build_kit_refuses_tensorrt_older_than_10():
    for ok in ("10.3.0", "11.0.1"):
        check_version(ok)
    with pytest.raises(SystemExit, match="JetPack 6.0 ships TensorRT 8.6"):
        check_version("8.6.2")


def test_timing_cache_is_keyed_by_version_gpu_and_target(monkeypatch, tmp_path):
    from edgeft.backends.tensorrt import timing_cache_path

    monkeypatch.setenv("EDGEFT_CACHE_DIR", str(tmp_path))
    a = timing_cache_path("jetson-orin-nano-int8", "10.3.0", "Orin (nvgpu)")
    assert a.parent == tmp_path / "tensorrt" and a.name == "jetson-orin-nano-int8-trt10.3.0-Orin-nvgpu.timing.cache"
    assert len({a, timing_cache_path("jetson-orin-nano-int8", "11.0.0", "Orin (nvgpu)"),
                timing_cache_path("jetson-orin-nano-int8", "10.3.0", "NVIDIA H200"),
                timing_cache_path("gpu-server-int8", "10.3.0", "Orin (nvgpu)")}) == 4
