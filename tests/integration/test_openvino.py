"""The openvino-cpu backend: OpenVINO reads the Q/DQ graph; its int8 layers, the FP32 reference pinned to FP32,
verify, and a bundle the device runtime checks through OpenVINO."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edgeft.cli.commands import cli
from tests.variants import run_with_target

pytest.importorskip("openvino", reason="openvino is not installed (pip install 'edgeft[openvino]')")
pytestmark = pytest.mark.filterwarnings("ignore")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def ov_run(tiny_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ov")
    run_dir, target = run_with_target(tiny_run, tmp, "ov-int8", ("name: test-int8", "name: ov-int8"),
                                      ("backend: onnxruntime-cpu", "backend: openvino-cpu"),
                                      ("onnxruntime: {int8_embeddings: false}\n", ""), run_name="run")
    for command in ("compile", "verify"):
        r = invoke(command, run_dir, "--target", target)
        assert r.exit_code == 0, r.output
    return {"dir": run_dir, "target": target, "tmp": tmp}


def test_int8_engine_runs_every_linear_layer_in_int8_and_the_reference_in_fp32(ov_run):
    eng = json.loads((ov_run["dir"] / "compile/ov-int8/engine/engine.json").read_text())
    ref = json.loads((ov_run["dir"] / "compile/ov-int8/fp32-reference/engine.json").read_text())
    assert eng["file"] == "model.xml" and (ov_run["dir"] / "compile/ov-int8/engine/model.bin").is_file()
    # 2 layers x 6 Linear + pooler + classifier, all FullyConnected in i8 on this CPU
    assert eng["where_it_ran"]["op_counts"] == {"FullyConnected:i8": 14} and eng["where_it_ran"]["int8_share"] == 1.0
    assert ref["inference_precision"] == "f32" and ref["where_it_ran"]["int8_share"] == 0.0
    assert "bf16" not in ref["where_it_ran"]["runtime_precisions"] and "i8" not in ref["where_it_ran"]["runtime_precisions"]


def test_verify_scores_the_openvino_engines_close_to_the_qdq_graph(ov_run, tiny_run):
    from edgeft.stages.export import reference_session
    from edgeft_runtime.text import TextPreprocessor

    report = json.loads((ov_run["dir"] / "report.json").read_text())
    rows = {e["role"]: e for e in report["engines"]}
    assert rows["engine"]["backend"] == "openvino-cpu" and rows["engine"]["latency_ms"]["p50_ms"] > 0
    ov = np.load(ov_run["dir"] / "verify/predictions/ov-int8-engine.npy")
    sess = reference_session(ov_run["dir"] / "export/int8/model.onnx")
    pre = TextPreprocessor(ov_run["dir"] / "export/int8", 32)
    texts = [json.loads(x)["text"] for x in (ov_run["dir"] / "finetune/data/test.jsonl").read_text().splitlines()]
    want = np.stack([sess.run(None, pre([t], [i.name for i in sess.get_inputs()]))[0][0] for t in texts])
    assert np.abs(ov - want).max() < 0.05          # int8 kernels + BF16 float layers vs the graph's float math
    assert (ov.argmax(-1) == want.argmax(-1)).mean() >= 0.9


def test_openvino_bundle_checks_itself_through_openvino(ov_run):
    r = invoke("package", ov_run["dir"], "--out", ov_run["tmp"] / "b", "--target", "ov-int8")
    assert r.exit_code == 0, r.output
    bundle = ov_run["tmp"] / "b/run-ov-int8"
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["engine"]["model_file"] == "engine/model.xml" and "openvino>=2025.0" in meta["runtime"]["dependencies"]
    assert [i["name"] for i in meta["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    check = subprocess.run([sys.executable, "-m", "edgeft_runtime.cli", "check", bundle], capture_output=True, text=True)
    assert check.returncode == 0 and "through OpenVINO CPU" in check.stdout, check.stdout + check.stderr
