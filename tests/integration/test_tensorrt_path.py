"""TensorRT targets: Q/DQ lint, deferred build kits where TensorRT is missing, real builds where present."""
from __future__ import annotations

import json
import py_compile

import pytest
from click.testing import CliRunner

from edgeft.backends.qdq_lint import lint_for_tensorrt
from edgeft.backends.tensorrt import tensorrt_version
from edgeft.cli.commands import cli

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def trt_run(tiny_model_dir, tmp_path_factory):
    from edgeft.targets import targets_dir

    tmp = tmp_path_factory.mktemp("trt")
    target = tmp / "trt-int8.yaml"
    text = (targets_dir() / "jetson-orin-nano-int8.yaml").read_text()
    text = text.replace("name: jetson-orin-nano-int8", "name: trt-int8").replace("max_drop: 0.01", "max_drop: 1.0")
    target.write_text(text.replace("min_top1: 0.97", "min_top1: 0.0"))
    fp16 = tmp / "trt-fp16.yaml"
    fp16.write_text((targets_dir() / "jetson-orin-nano-fp16.yaml").read_text()
                    .replace("name: jetson-orin-nano-fp16", "name: trt-fp16"))
    out = tmp / "out"
    r = CliRunner().invoke(cli, ["run", "--model", str(tiny_model_dir), "--target", str(target), "--target", str(fp16),
                                 "--epochs", "1", "--max-steps", "4", "--max-length", "32", "--out", str(out)],
                           catch_exceptions=False)
    return {"out": out, "result": r, "target": target}


# Without TensorRT the kits' latency gates are not measured: the verdict is incomplete, exit 4.
EXPECTED_EXIT = 0 if tensorrt_version() is not None else 4


def _engine(report: dict, target: str = "trt-int8") -> dict:
    return next(e for e in report["engines"] if e["role"] == "engine" and e["target"] == target)


def test_modelopt_export_passes_tensorrt_qdq_lint(trt_run):
    r = lint_for_tensorrt(trt_run["out"] / "export/int8/model.onnx")
    assert r["ok"], r["problems"]
    assert r["counts"]["weight_dq"] == 2 * 6 + 2      # 6 Linear per layer x 2 layers + pooler + classifier


def test_lint_rejects_ort_flavoured_graph_and_wrong_weight_axis(trt_run, tmp_path):
    import onnx

    from edgeft.backends.ort_passes import rewrite_for_ort

    src = trt_run["out"] / "export/int8/model.onnx"
    m = onnx.load(str(src))
    rewrite_for_ort(m)
    onnx.save(m, str(tmp_path / "ort.onnx"))
    r = lint_for_tensorrt(tmp_path / "ort.onnx")
    assert not r["ok"] and any("zero point must be int8, got uint8" in p for p in r["problems"])

    m = onnx.load(str(src))
    dq = next(n for n in m.graph.node if n.op_type == "DequantizeLinear" and "query/weight_quantizer" in n.name)
    next(a for a in dq.attribute if a.name == "axis").i = 1
    onnx.save(m, str(tmp_path / "axis.onnx"))
    r = lint_for_tensorrt(tmp_path / "axis.onnx")
    assert r["problems"] == [f"{dq.name}: per-channel scales on axis 1, but MatMul needs the output-channel axis 0"]


@pytest.mark.skipif(tensorrt_version() is not None, reason="TensorRT is installed: a real engine is built instead")
def test_without_tensorrt_compile_writes_a_deferred_build_kit(trt_run, tmp_path):
    assert trt_run["result"].exit_code == 4, trt_run["result"].output
    assert "incomplete" in trt_run["result"].output and "--accept-unmeasured" in trt_run["result"].output
    kit = trt_run["out"] / "compile/trt-int8/engine"
    meta = json.loads((kit / "engine.json").read_text())
    assert meta["deferred"] is True and "no engine was built" in meta["message"]
    assert not list(kit.glob("*.engine")), "no engine file may exist when TensorRT did not build one"
    py_compile.compile(str(kit / "build_engine.py"), cfile=str(tmp_path / "b.pyc"), doraise=True)   # not into the run
    settings = json.loads((kit / "settings.json").read_text())
    assert settings["precision"] == "int8"
    assert settings["input_shapes"]["input_ids"] == {"min": [1, 1], "opt": [1, 128], "max": [8, 512]}
    assert "NO ENGINE WAS BUILT" in (kit / "README.txt").read_text()
    assert lint_for_tensorrt(kit / "model.onnx")["ok"]


@pytest.mark.skipif(tensorrt_version() is not None, reason="TensorRT is installed: latency is measured")
def test_without_tensorrt_report_checks_kit_onnx_and_measures_no_latency(trt_run):
    report = json.loads((trt_run["out"] / "report.json").read_text())
    eng = _engine(report)
    assert eng["deferred"] and eng["runtime"] == "onnxruntime-cpu"
    assert eng["latency_ms"] is None and eng["latency_ratio_vs_fp32"] is None
    lat = next(g for g in eng["gates"] if g["name"] == "p50_ratio_vs_fp32")
    assert lat["passed"] is None, "an unmeasured gate is reported as such, never as passed"
    assert "deferred" in lat["not_measured"]
    assert eng["verdict"] == report["verdict"] == "incomplete" and report["passed"] is False
    assert 0.0 <= eng["top1_agreement"] <= 1.0
    assert any("no engine was built" in n for n in report["notes"])
    md = (trt_run["out"] / "report.md").read_text()
    assert "not measured: no engine was built here" in md and "INCOMPLETE" in md.splitlines()[0]


@pytest.mark.tensorrt
@pytest.mark.skipif(tensorrt_version() is None, reason="needs TensorRT and a CUDA GPU")
def test_tensorrt_builds_int8_engine_and_agrees_with_onnxruntime(trt_run):
    assert trt_run["result"].exit_code == 0, trt_run["result"].output
    eng_dir = trt_run["out"] / "compile/trt-int8/engine"
    meta = json.loads((eng_dir / "engine.json").read_text())
    assert meta["deferred"] is False and (eng_dir / "model.engine").is_file()
    info = json.loads((eng_dir / "engine_info.json").read_text())
    assert info["by_precision"].get("Int8", 0) > 0, info["by_precision"]
    report = json.loads((trt_run["out"] / "report.json").read_text())
    eng = _engine(report)
    assert eng["latency_ms"]["p50_ms"] > 0 and eng["top1_agreement"] > 0.9


@pytest.mark.skipif(tensorrt_version() is not None, reason="TensorRT is installed: the FP16 graph became an engine")
def test_fp16_target_ships_an_fp16_graph_that_onnxruntime_checks(trt_run):
    """TensorRT 11 builds strongly typed (no FP16 flag): an FP16 engine needs an FP16 graph. The kit holds
    it, inputs and outputs unchanged, and verify measured that graph's accuracy through ONNX Runtime."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto

    assert trt_run["result"].exit_code == EXPECTED_EXIT, trt_run["result"].output
    kit = trt_run["out"] / "compile/trt-fp16/engine"
    settings = json.loads((kit / "settings.json").read_text())
    assert settings["precision"] == "fp16" and settings["onnx_precision"] == "fp16"
    model = onnx.load(str(kit / "model.onnx"))
    fp32 = onnx.load(str(trt_run["out"] / "export/fp32/model.onnx"))
    kinds = {i.data_type for i in model.graph.initializer if len(i.dims) == 2}      # the weight matrices
    assert kinds == {TensorProto.FLOAT16}, kinds
    io = lambda m: [(v.name, v.type.tensor_type.elem_type) for v in (*m.graph.input, *m.graph.output)]  # noqa: E731
    assert io(model) == io(fp32)
    meta = json.loads((kit / "engine.json").read_text())
    assert meta["deferred"] and meta["fp16_conversion"]["initializers_by_type"].get("FLOAT16", 0) > 0

    feeds = {"input_ids": np.array([[101, 2735, 2006, 1996, 4597, 102]]), "attention_mask": np.ones((1, 6), np.int64),
             "token_type_ids": np.zeros((1, 6), np.int64)}
    run = lambda path: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]  # noqa: E731
    half, full = run(kit / "model.onnx"), run(trt_run["out"] / "export/fp32/model.onnx")
    assert half.dtype == np.float32 and 0 < np.abs(half - full).max() < 1e-2     # FP16 rounding, nothing worse
    eng = _engine(json.loads((trt_run["out"] / "report.json").read_text()), "trt-fp16")
    assert eng["deferred"] and eng["top1_agreement"] >= 0.95


def test_build_kit_script_is_the_backend_build_code():
    """The kit ships the very module compile uses, not a copy that could drift."""
    from pathlib import Path

    import edgeft.backends.trt_build as tb

    src = Path(tb.__file__).read_text()
    assert "def build(" in src and "import tensorrt as trt" in src and "from edgeft" not in src


@pytest.mark.skipif(tensorrt_version() is not None, reason="checks what a device without TensorRT is told")
def test_tensorrt_bundle_carries_the_kit_and_says_what_is_missing_without_tensorrt(trt_run, tmp_path):
    import subprocess
    import sys

    r = CliRunner().invoke(cli, ["package", str(trt_run["out"]), "--out", str(tmp_path), "--target", "trt-int8",
                                 "--docker"], catch_exceptions=False)
    assert r.exit_code == 0, r.output                         # incomplete (latency not measured) is packaged
    bundle = tmp_path / "out-trt-int8"
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["verification"]["verdict"] == "incomplete" and meta["engine"]["deferred"] is True
    assert (bundle / "engine/build_engine.py").is_file() and (bundle / "engine/settings.json").is_file()
    assert "l4t-jetpack" in (bundle / "Dockerfile").read_text()            # sm_87: the Jetson image
    assert "polygraphy>=0.49" in meta["runtime"]["dependencies"]
    tol = meta["golden"]["tolerance"]
    assert tol["tensorrt_kit_floor"] > 0 and tol["atol"] >= tol["tensorrt_kit_floor"]
    info = subprocess.run([sys.executable, "-m", "edgeft_runtime.cli", "info", bundle], capture_output=True, text=True)
    assert info.returncode == 0 and "recorded verdict: incomplete" in info.stdout and "not measured there" in info.stdout
    check = subprocess.run([sys.executable, "-m", "edgeft_runtime.cli", "check", bundle], capture_output=True, text=True)
    assert check.returncode == 1 and "TensorRT is not importable here" in check.stderr and "fix:" in check.stderr
