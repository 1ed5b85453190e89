"""The whole flow through the CLI on a tiny BERT (built from config) and ~130 real utterances."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edgeft.cli.commands import cli
from edgeft_runtime.fileio import sha256_file
from tests.variants import run_with_target

pytestmark = pytest.mark.filterwarnings("ignore")


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_run_exits_zero_and_writes_reports(tiny_run):
    r = tiny_run["result"]
    assert r.exit_code == 0, r.output
    out = tiny_run["out"]
    report = json.loads((out / "report.json").read_text())
    assert report["schema_version"] == 1 and report["passed"] is True
    roles = {(e["target"], e["role"]) for e in report["engines"]}
    assert roles == {("test-int8", "engine"), ("test-int8", "fp32-reference")}
    eng = next(e for e in report["engines"] if e["role"] == "engine")
    for key in ("accuracy", "top1_agreement", "latency_ms", "latency_ratio_vs_fp32", "gates", "where_it_ran"):
        assert key in eng
    assert eng["latency_ms"]["p50_ms"] > 0 and eng["latency_ms"]["p99_ms"] >= eng["latency_ms"]["p50_ms"]
    assert [g["name"] for g in eng["gates"]] == ["accuracy_drop", "top1_agreement"]
    assert "| test-int8 | engine | int8 |" in (out / "report.md").read_text()


def test_run_int8_engine_runs_matmuls_in_int8_kernels(tiny_run):
    meta = json.loads((tiny_run["out"] / "compile/test-int8/engine/engine.json").read_text())
    wr = meta["where_it_ran"]
    # 2 layers x (attention out, ffn in, ffn out) Linear layers; q, k, v run inside QAttention
    assert wr["op_counts"].get("MatMulIntegerToFloat", 0) == 6
    assert meta["qdq_rewrites"]["activations_to_uint8"] > 0
    # attention (QK^T, softmax, AV) of both layers fused, then packed with its int8 q/k/v projections
    assert meta["fusions"] == {"attention": 2, "packed_qkv_attention": 2}
    assert wr["op_counts"]["QAttention"] == 2 and "MultiHeadAttention" not in wr["op_counts"]
    assert wr["float_activation_matmuls"] == 0 and "Softmax" not in wr["op_counts"]
    # pooler and classifier: ModelOpt quantizes them, compile gives their bias the int32 grid ORT's QGemm needs
    assert meta["qdq_rewrites"]["gemm_bias_int32"] == 2 and wr["op_counts"]["QGemm"] == 2
    assert wr["float_weight_layers"] == [] and wr["int8_share"] == 1.0
    ref = json.loads((tiny_run["out"] / "compile/test-int8/fp32-reference/engine.json").read_text())
    assert ref["where_it_ran"]["int8_compute_nodes"] == 0 and ref["fusions"]["packed_qkv_attention"] == 2
    assert ref["where_it_ran"]["op_counts"]["Attention"] == 2 and ref["where_it_ran"]["int8_share"] == 0.0


def _padded_feeds(batch: int = 3, seq: int = 24) -> dict:
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 100, (batch, seq))
    mask = np.ones_like(ids)
    mask[1, 9:] = 0                       # padded rows: the mask must become the key padding mask
    mask[2, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _logits(path, feeds) -> np.ndarray:
    from edgeft.stages.export import reference_session

    sess = reference_session(path)           # the graph's own math, not the host's int8 kernels
    return sess.run(["logits"], {i.name: feeds[i.name] for i in sess.get_inputs()})[0]


def test_fp32_reference_engine_keeps_exported_logits_with_padding(tiny_run):
    """Every fusion in the FP32 engine (attention, packed q/k/v) computes what the export computes."""
    feeds = _padded_feeds()
    out = tiny_run["out"]
    np.testing.assert_allclose(_logits(out / "compile/test-int8/fp32-reference/model.onnx", feeds),
                               _logits(out / "export/fp32/model.onnx", feeds), atol=1e-4)


def test_attention_fusion_keeps_fp32_logits_with_padding(tiny_run, tmp_path):
    import onnx

    from edgeft.backends.ort_fusions import fuse_attention

    src = tiny_run["out"] / "export/fp32/model.onnx"
    model = onnx.load(str(src))
    assert fuse_attention(model) == 2
    onnx.save(model, str(tmp_path / "fused.onnx"))
    feeds = _padded_feeds()
    np.testing.assert_allclose(_logits(tmp_path / "fused.onnx", feeds), _logits(src, feeds), atol=1e-4)


def test_run_manifest_records_every_artifact_with_valid_sha256(tiny_run):
    out = tiny_run["out"]
    m = json.loads((out / "manifest.json").read_text())
    assert set(m["stages"]) == {"finetune", "export", "compile", "verify"}
    assert m["config"]["label_column"] == "category"
    assert m["data"]["fingerprint"] and m["versions"]["onnxruntime"]
    paths = {a["path"] for a in m["artifacts"]}
    for a in m["artifacts"]:
        assert sha256_file(out / a["path"]) == a["sha256"], a["path"]
        for parent in a["parents"]:
            assert parent in paths, f"{a['path']} names unknown parent {parent}"
    engine = next(a for a in m["artifacts"] if a["kind"] == "engine/onnxruntime-cpu" and "engine/" in a["path"])
    assert engine["parents"] == ["export/int8/model.onnx"] and engine["target"] == "test-int8"


def test_run_parity_and_qdq_export_recorded(tiny_run):
    parity = json.loads((tiny_run["out"] / "export/parity.json").read_text())
    assert parity["fp32"]["ok"] and parity["fp32"]["max_abs_diff"] < 1e-3
    assert parity["int8"]["qdq_nodes"]["QuantizeLinear"] > 0
    assert "parity fp32/logits: ✓" in tiny_run["result"].output


def test_engine_rewrites_keep_outputs_of_the_plain_qdq_graph(tiny_run):
    """The ORT-flavoured engine (dedupe, u8, folded bias) computes what the exported Q/DQ graph computes,
    evaluated in float (ORT optimizations off, the same on every CPU). Tolerance 1e-4 on logits of ~0.03: the
    int32 sums are exact on every x86 class once no kernel saturates (the ``isa: any`` target builds u8u8);
    what may differ is float rounding of the rescale, moving a requantized value by one step now and then."""
    from edgeft.stages.export import reference_session
    from edgeft_runtime.session import open_engine
    from edgeft_runtime.text import TextPreprocessor

    out = tiny_run["out"]
    eng = open_engine(out / "compile/test-int8/engine")
    plain = reference_session(out / "export/int8/model.onnx")
    pre = TextPreprocessor(out / "compile/test-int8/engine", 32)
    texts = ["turn on the kitchen lights", "play some jazz in the bedroom please", "weather tomorrow?"]
    for t in texts:
        feeds = pre([t], eng.input_names)
        a = eng.run(feeds)["logits"]
        b = plain.run(["logits"], {k: feeds[k] for k in [i.name for i in plain.get_inputs()]})[0]
        np.testing.assert_allclose(a, b, atol=1e-4)
    feeds = _padded_feeds()                  # a padded batch through QAttention's key padding mask
    np.testing.assert_allclose(eng.run(feeds)["logits"], _logits(out / "export/int8/model.onnx", feeds), atol=1e-4)


def test_rerun_same_inputs_skips_every_stage(tiny_run):
    out = tiny_run["out"]
    before = (out / "manifest.json").read_text()
    engine_mtime = (out / "compile/test-int8/engine/model.onnx").stat().st_mtime_ns
    r = invoke(*tiny_run["args"])
    assert r.exit_code == 0
    for stage in ("finetune", "export", "compile", "verify"):
        assert f"{stage}: up to date, skipped" in r.output
    after = json.loads((out / "manifest.json").read_text())
    assert after["stages"] == json.loads(before)["stages"]
    assert (out / "compile/test-int8/engine/model.onnx").stat().st_mtime_ns == engine_mtime


def test_verify_alone_with_impossible_latency_gate_exits_3(tiny_run, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run["out"], run_dir)
    strict = tmp_path / "strict.yaml"
    strict.write_text(tiny_run["target"].read_text().replace("name: test-int8", "name: strict"))
    strict.write_text(strict.read_text().replace("agreement: {min_top1: 0.0}}",
                                                 "agreement: {min_top1: 0.0}, latency: {p50_ms: 0.000001}, "
                                                 "int8_share: {min: 0.9}}"))
    # one of the two encoder blocks exported without Q/DQ: its 6 Linear layers run in float
    r = invoke("export", run_dir, "--keep-fp32", "bert.encoder.layer.0")
    assert r.exit_code == 0, r.output
    r = invoke("compile", run_dir, "--target", strict)
    assert r.exit_code == 0, r.output
    assert "finetune" not in r.output, "compile alone must not redo earlier stages"
    r = invoke("verify", run_dir, "--target", strict)
    assert r.exit_code == 3
    assert "p50_ms" in r.output and "gate(s) failed" in r.output
    assert "int8_share = 0.5714 (needs >= 0.9)" in r.output
    report = json.loads((run_dir / "report.json").read_text())
    assert report["passed"] is False


def test_stage_without_its_parent_names_the_command_to_run(tmp_path):
    r = invoke("export", tmp_path / "empty")
    assert r.exit_code == 1
    assert "edgeft run --out" in r.output and "Traceback" not in r.output


def test_latency_worker_runs_without_torch(tiny_run):
    """The device-side runtime (sessions, latency) must not import torch."""
    engine = tiny_run["out"] / "compile/test-int8/engine"
    code = ("import sys, json; from edgeft.runtime.latency import measure; "
            f"r = measure({str(engine)!r}, {{'input_ids': [1, 8]}}, 2, 5, 1); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(json.dumps(r))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["p50_ms"] > 0


def test_failed_stage_leaves_previous_outputs_and_manifest_intact(tiny_run, tmp_path, monkeypatch):
    """A stage that dies half-way (here: raises after writing a file) leaves nothing that looks whole."""
    import shutil

    import edgeft.stages.compile as compile_stage

    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run["out"], run_dir)
    manifest_before = (run_dir / "manifest.json").read_text()
    engine = run_dir / "compile/test-int8/engine/model.onnx"
    digest = sha256_file(engine)

    def dies(ctx, work, force=False):
        (work / "test-int8").mkdir(parents=True)
        (work / "test-int8" / "half-written.onnx").write_bytes(b"\0" * 10)
        raise RuntimeError("killed")

    monkeypatch.setattr(compile_stage, "run", dies)
    with pytest.raises(RuntimeError):
        CliRunner().invoke(cli, ["compile", str(run_dir), "--force"], catch_exceptions=False)
    assert not (run_dir / ".compile.tmp").exists()
    assert not list(run_dir.rglob("half-written.onnx"))
    assert sha256_file(engine) == digest
    before, after = json.loads(manifest_before), json.loads((run_dir / "manifest.json").read_text())
    assert after["stages"] == before["stages"] and after["artifacts"] == before["artifacts"]


def test_corrupted_artifact_is_rebuilt_on_rerun(tiny_run, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run["out"], run_dir)
    engine = run_dir / "compile/test-int8/engine/model.onnx"
    good = sha256_file(engine)
    engine.write_bytes(engine.read_bytes()[:1000])          # truncated, as a killed copy would leave it
    r = invoke("compile", run_dir, "--target", tiny_run["target"])
    assert r.exit_code == 0 and "compile: started" in r.output
    assert sha256_file(engine) == good, "the rebuilt engine is the engine the run built, byte for byte"


def test_parity_flags_an_onnx_that_is_not_the_model(tiny_run, tmp_path):
    """Parity is shown, not assumed: a different model behind the ONNX file fails the FP32 check."""
    import torch

    from edgeft.models.hf_text import load_classifier, load_tokenizer
    from edgeft.stages.export import FP32_ATOL, parity

    out = tiny_run["out"]
    labels = json.loads((out / "finetune/data/labels.json").read_text())
    tok = load_tokenizer(out / "finetune/baseline")
    feeds = tok(["turn on the lights", "play jazz"], padding=True, return_tensors="pt")
    model = load_classifier(out / "finetune/baseline", labels).eval()
    same = parity(model, out / "export/fp32/model.onnx", feeds, atol=FP32_ATOL, min_agreement=None)
    assert same["ok"] and same["max_abs_diff"] < FP32_ATOL
    with torch.no_grad():
        model.classifier.bias += 1.0
    other = parity(model, out / "export/fp32/model.onnx", feeds, atol=FP32_ATOL, min_agreement=None)
    assert not other["ok"] and other["max_abs_diff"] > 0.5


def test_finetune_alone_with_quant_ptq_calibrates_only(tiny_model_dir, intents_csv, tmp_path):
    out = tmp_path / "out"
    r = invoke("finetune", out, "--model", tiny_model_dir, "--data", intents_csv, "--text-column", "utterance",
               "--label-column", "category", "--epochs", "1", "--quant", "ptq", "--calib-method", "entropy",
               "--max-length", "32")
    assert r.exit_code == 0, r.output
    m = json.loads((out / "finetune/metrics.json").read_text())
    assert m["qat"]["mode"] == "ptq" and m["qat"]["quantizers"]["enabled"] > 0
    assert "quantization-aware training" not in r.output
    assert m["calibration"]["num_samples"] == 256 and len(m["calibration"]["fingerprint"]) == 64
    assert m["calibration"]["method"] == "entropy" and "INT8 calibration (entropy)" in r.output


def test_qat_that_moves_away_from_the_baseline_is_not_kept(tiny_model_dir, intents_csv, tmp_path, monkeypatch):
    """A QAT epoch that moves the model away from the FP32 baseline (here: training followed by large weight
    noise): ``--qat-keep closer`` (default) keeps the calibrated weights, ``always`` keeps QAT's; the saved
    model holds the kept weights."""
    import torch
    from transformers import Trainer

    out = tmp_path / "out"
    common = ("--model", tiny_model_dir, "--data", intents_csv, "--text-column", "utterance", "--label-column",
              "category", "--epochs", "2", "--max-length", "32", "--calib-method", "max")
    r = invoke("finetune", out, *common, "--quant", "ptq")
    assert r.exit_code == 0, r.output
    state = out / "finetune/qat/modelopt_state.pth"
    key = "bert.encoder.layer.0.intermediate.dense.weight"
    calibrated_w = torch.load(state, weights_only=False)["model_state_dict"][key]

    real_train = Trainer.train

    def train_then_wreck(self, *args, **kwargs):
        result = real_train(self, *args, **kwargs)
        if any("quantizer" in n for n, _ in self.model.named_modules()):      # the QAT trainer only
            torch.manual_seed(0)
            with torch.no_grad():
                for n, p in self.model.named_parameters():
                    if "encoder" in n and n.endswith("weight") and p.dim() == 2:
                        p.add_(torch.randn_like(p) * p.std() * 3)
        return result

    monkeypatch.setattr(Trainer, "train", train_then_wreck)
    for keep, expected in (("closer", "calibrated"), ("always", "qat")):
        r = invoke("finetune", out, *common, "--quant", "qat", "--qat-keep", keep)
        assert r.exit_code == 0, r.output
        q = json.loads((out / "finetune/metrics.json").read_text())["qat"]
        f = q["fidelity_mse"]
        assert f["kept"] == expected and f["qat"] > f["calibrated"], f
        assert ("kept the calibrated weights" in r.output) == (expected == "calibrated")
        assert "FP32 baseline reused" in r.output
        saved_w = torch.load(state, weights_only=False)["model_state_dict"][key]
        assert torch.equal(saved_w, calibrated_w) == (expected == "calibrated")


def test_int8_embedding_tables_shrink_the_engine_and_change_no_value(tiny_run, tmp_path):
    from edgeft.stages.export import reference_session

    from edgeft_runtime.session import open_engine
    from edgeft_runtime.text import TextPreprocessor

    run_dir, target = run_with_target(tiny_run, tmp_path, "emb", ("int8_embeddings: false", "int8_embeddings: true"))
    r = invoke("compile", run_dir, "--target", target)
    assert r.exit_code == 0, r.output
    eng_dir = run_dir / "compile/test-int8/engine"
    meta = json.loads((eng_dir / "engine.json").read_text())
    assert meta["qdq_rewrites"]["int8_embedding_tables"] == 1           # word embeddings (30522 rows)
    # finetune put the table on this grid before QAT: storing it int8 changes nothing
    assert meta["qdq_rewrites"]["embedding_max_abs_error"] < 1e-6
    plain_size = (tiny_run["out"] / "compile/test-int8/engine/model.onnx").stat().st_size
    assert (eng_dir / "model.onnx").stat().st_size < 0.5 * plain_size
    eng = open_engine(eng_dir)
    plain = reference_session(run_dir / "export/int8/model.onnx")     # float Q/DQ math, any CPU
    pre = TextPreprocessor(eng_dir, 32)
    for t in ["turn on the kitchen lights", "play some jazz please", "what's the weather tomorrow"]:
        feeds = pre([t], eng.input_names)
        a = eng.run(feeds)["logits"]
        b = plain.run(["logits"], {k: feeds[k] for k in [i.name for i in plain.get_inputs()]})[0]
        np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("which", ["post_gelu", "all"])
def test_dynamic_activations_quantize_chosen_gemm_inputs_per_call(tiny_run, tmp_path, which):
    """`onnxruntime.dynamic_activations`: the FFN down-projections (post_gelu) or every int8 GEMM but the
    packed attention (all) take float inputs into DynamicQuantizeMatMul; their calibrated QuantizeLinear goes,
    everything stays in int8 kernels, and the logits stay within a tenth of the static engine's range."""
    import onnx

    from edgeft_runtime.session import open_engine
    from edgeft_runtime.text import TextPreprocessor

    run_dir, target = run_with_target(tiny_run, tmp_path, "dyn", (
        "onnxruntime: {int8_embeddings: false}", f"onnxruntime: {{int8_embeddings: false, dynamic_activations: {which}}}"))
    r = invoke("compile", run_dir, "--target", target)
    assert r.exit_code == 0, r.output
    eng_dir = run_dir / "compile/test-int8/engine"
    meta = json.loads((eng_dir / "engine.json").read_text())
    static = onnx.load(str(tiny_run["out"] / "compile/test-int8/engine/model.onnx")).graph
    graph = onnx.load(str(eng_dir / "model.onnx")).graph
    ops = [n.op_type for n in graph.node]
    layers = sum(1 for n in static.node if n.op_type in ("QAttention", "Attention"))
    assert layers >= 1 and ops.count("QAttention") == layers                     # attention keeps its grid
    dyn = [n for n in graph.node if n.op_type == "DynamicQuantizeMatMul"]
    prod = {o: n for n in graph.node for o in n.output}
    if which == "post_gelu":
        assert len(dyn) == layers and all("Gelu" in prod[n.input[0]].op_type for n in dyn)
    else:
        assert len(dyn) == sum(1 for n in static.node if n.op_type == "MatMulIntegerToFloat")
    assert meta["qdq_rewrites"]["dynamic_activation_gemms"] == len(dyn)
    assert ops.count("QuantizeLinear") == sum(n.op_type == "QuantizeLinear" for n in static.node) - len(dyn)
    assert meta["where_it_ran"]["int8_share"] == 1.0
    a, b = open_engine(eng_dir), open_engine(tiny_run["out"] / "compile/test-int8/engine")
    pre = TextPreprocessor(eng_dir, 32)
    for t in ["turn on the kitchen lights", "play some jazz please", "what's the weather tomorrow"]:
        feeds = pre([t], a.input_names)
        x, y = a.run(feeds)["logits"], b.run(feeds)["logits"]
        assert np.abs(x - y).max() <= 0.1 * np.abs(y).max()


def test_keep_fp32_one_layer_runs_it_in_float_and_an_unknown_name_exits_1(tiny_run, tmp_path):
    import shutil

    import onnx

    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run["out"], run_dir)
    args = [*tiny_run["args"][:-1], run_dir]
    export_digest = sha256_file(run_dir / "export/int8/model.onnx")
    r = CliRunner().invoke(cli, [str(a) for a in args] + ["--keep-fp32", "bert.encoder.layer.9"])
    assert r.exit_code == 1 and "bert.encoder.layer.9" in r.output and "fix:" in r.output, r.output
    assert sha256_file(run_dir / "export/int8/model.onnx") == export_digest      # nothing half-written

    layer = "bert.encoder.layer.1.output.dense"
    r = invoke(*args, "--keep-fp32", layer)
    assert r.exit_code == 0, r.output
    names = [n.name for n in onnx.load(str(run_dir / "export/int8/model.onnx")).graph.node
             if n.op_type == "QuantizeLinear"]
    assert not [n for n in names if "/layer.1/output/dense/" in n]
    assert [n for n in names if "/layer.1/intermediate/dense/" in n]            # the rest of the block stays int8
    where = json.loads((run_dir / "compile/test-int8/engine/engine.json").read_text())["where_it_ran"]
    assert len(where["float_weight_layers"]) == 1 and where["int8_share"] < 1.0


def test_latency_gate_on_a_host_without_the_target_isa_is_not_measured(tiny_run, tmp_path, monkeypatch):
    """An avx512_vnni target verified on an AVX2 host: its (impossible) latency gate is not measured, the
    verdict is incomplete (exit 4, 0 with --accept-unmeasured); on a VNNI host the same gate fails (exit 3)."""
    run_dir, target = run_with_target(
        tiny_run, tmp_path, "vnni", ("name: test-int8", "name: vnni"), ("isa: any", "isa: avx512_vnni"),
        ("agreement: {min_top1: 0.0}}", "agreement: {min_top1: 0.0}, latency: {max_ratio_vs_fp32: 1e-6}}"))
    monkeypatch.setenv("EDGEFT_CPU_FLAGS", "sse2 fma avx2")
    assert invoke("compile", run_dir, "--target", target).exit_code == 0
    r = invoke("verify", run_dir, "--target", target)
    assert r.exit_code == 4, r.output
    assert "incomplete" in r.output and "--accept-unmeasured" in r.output
    report = json.loads((run_dir / "verify/report.json").read_text())
    gate = next(g for e in report["engines"] for g in e["gates"] if g["name"] == "p50_ratio_vs_fp32")
    assert gate["passed"] is None and "ISA" in gate["not_measured"] and gate["value"] is not None
    assert report["verdict"] == "incomplete" and report["host"]["isa_class"] == "avx2"
    assert report["engines"][0]["latency_ms"]["p50_ms"] > 0           # measured, reported, not judged
    assert invoke("verify", run_dir, "--target", target, "--accept-unmeasured").exit_code == 0
    # packaged as it is, and said so at packaging time, not only later on the device
    r = invoke("package", run_dir, "--out", tmp_path / "b")
    assert r.exit_code == 0, r.output
    assert "vnni's verification is incomplete (not measured: p50_ratio_vs_fp32)" in r.output
    monkeypatch.setenv("EDGEFT_CPU_FLAGS", "sse2 avx2 avx512_vnni")
    r = invoke("verify", run_dir, "--target", target)
    assert r.exit_code == 3 and "p50_ratio_vs_fp32" in r.output, r.output


def test_tiny_engine_matches_its_qdq_graph_on_avx2_kernels(tiny_run):
    """The isa-any engine (u8u8) run on AVX2 kernels: the same 1e-4 as on this host (see the test above)."""
    from tests.avx2 import run_on_avx2

    script = """
import json, sys
from pathlib import Path
import numpy as np
from edgeft_runtime.session import open_engine
from edgeft_runtime.text import TextPreprocessor
from edgeft.stages.export import reference_session
out = Path(sys.argv[1])
eng = open_engine(out / "compile/test-int8/engine")
plain = reference_session(out / "export/int8/model.onnx")
pre = TextPreprocessor(out / "compile/test-int8/engine", 32)
diff = 0.0
for t in ["turn on the kitchen lights", "play some jazz in the bedroom please", "weather tomorrow?"]:
    feeds = pre([t], eng.input_names)
    b = plain.run(["logits"], {i.name: feeds[i.name] for i in plain.get_inputs()})[0]
    diff = max(diff, float(np.abs(eng.run(feeds)["logits"] - b).max()))
print(json.dumps({"max_abs_diff": diff}))
"""
    assert run_on_avx2(script, str(tiny_run["out"]))["max_abs_diff"] < 1e-4


def _flip_byte(path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("stage, victim, command", [
    ("compile", "compile/test-int8/engine/model.onnx", "verify"),
    ("compile", "compile/test-int8/engine/tokenizer.json", "verify"),
    ("finetune", "finetune/qat/modelopt_state.pth", "export"),
    ("export", "export/int8/tokenizer.json", "compile"),
    ("finetune", "finetune/data/test.jsonl", "verify"),
])
def test_a_changed_input_is_refused_naming_the_file_and_the_fix(tiny_run, tmp_path, stage, victim, command):
    """Before a stage reads an input, or calls itself up to date, the input's sha256 is checked against the
    manifest: tampered bytes are never measured, reported as PASSED or built on."""
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run["out"], run_dir)
    report_before = (run_dir / "verify/report.json").read_bytes()
    _flip_byte(run_dir / victim)
    for extra in ([], ["--force"]):
        r = invoke(command, run_dir, "--target", tiny_run["target"], *extra)
        assert r.exit_code == 1, r.output
        assert victim.split("/")[-1] in r.output and "does not match the sha256" in r.output
        assert f"edgeft {stage} " in r.output and "--force" in r.output        # the fix names the rebuild
        assert "up to date" not in r.output and "PASSED" not in r.output
    assert (run_dir / "verify/report.json").read_bytes() == report_before


def test_a_rejected_command_does_not_rewrite_the_recorded_config(tiny_run, tmp_path):
    """Bad input (exit 1) leaves the manifest as it was: the finished run still claims its own data."""
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run["out"], run_dir)
    before = (run_dir / "manifest.json").read_bytes()
    r = invoke("finetune", run_dir, "--data", tmp_path / "missing.csv", "--seed", "7")
    assert r.exit_code == 1
    assert (run_dir / "manifest.json").read_bytes() == before


def test_a_folder_that_is_not_a_run_is_refused_and_left_as_it_was(tiny_run, tmp_path):
    """--out on a user's folder (here: one with a finetune/ folder of their own and a report.md) changes nothing."""
    mine = tmp_path / "mine"
    (mine / "finetune").mkdir(parents=True)
    (mine / "finetune/notes.txt").write_text("my notes")
    (mine / "report.md").write_text("my report")
    args = [a if a != tiny_run["out"] else mine for a in tiny_run["args"]]
    r = invoke(*args)
    assert r.exit_code == 1 and "not an edgeft run directory" in r.output and "--out" in r.output
    assert sorted(p.name for p in mine.rglob("*")) == ["finetune", "notes.txt", "report.md"]
    assert (mine / "report.md").read_text() == "my report"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "manifest.json").write_text('{"name": "someone else\'s"}')
    r = invoke(*[a if a != tiny_run["out"] else foreign for a in tiny_run["args"]])
    assert r.exit_code == 1 and "is not an edgeft manifest" in r.output, r.output
    assert (foreign / "manifest.json").read_text() == '{"name": "someone else\'s"}'


def test_files_the_user_put_in_a_run_directory_are_never_replaced(tiny_run, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run["out"], run_dir)
    (run_dir / "compile/my-notes.txt").write_text("keep me")
    r = invoke("compile", run_dir, "--target", tiny_run["target"], "--force")
    assert r.exit_code == 1 and "compile/my-notes.txt" in r.output, r.output
    assert (run_dir / "compile/my-notes.txt").read_text() == "keep me"
    (run_dir / "compile/my-notes.txt").unlink()
    (run_dir / "report.md").write_text("edited by hand")
    r = invoke("verify", run_dir, "--target", tiny_run["target"])
    assert r.exit_code == 1 and "report.md" in r.output
    assert (run_dir / "report.md").read_text() == "edited by hand"


def test_a_second_command_on_a_run_directory_in_use_is_refused_then_runs_after_a_kill(tiny_run, tmp_path):
    """The lock is the kernel's (flock): another process holding it is named; once that process is
    killed (no clean-up), the next command takes the directory over."""
    import os
    import shutil
    import signal
    import time

    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run["out"], run_dir)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from edgeft.pipeline import _acquire_lock; "
        f"f = _acquire_lock(__import__('pathlib').Path({str(run_dir)!r})); print('held', flush=True); time.sleep(600)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = invoke("verify", run_dir, "--target", tiny_run["target"])
        assert r.exit_code == 1 and "in use by edgeft process" in r.output and str(holder.pid) in r.output
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    time.sleep(0.1)
    r = invoke("verify", run_dir, "--target", tiny_run["target"])
    assert r.exit_code == 0, r.output


def test_target_name_is_an_identifier_not_a_path(tmp_path):
    from edgeft.errors import ConfigError
    from edgeft.targets import load_target, targets_dir

    for bad in ("../escape", "/abs/path", "a b"):
        p = tmp_path / "t.yaml"
        p.write_text((targets_dir() / "x86-avx2-int8.yaml").read_text().replace("name: x86-avx2-int8", f"name: '{bad}'"))
        with pytest.raises(ConfigError, match="name"):
            load_target(str(p))


def test_latency_process_never_imports_a_module_planted_where_the_user_stands(tiny_run, tmp_path, monkeypatch):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run["out"], run_dir)
    marker = tmp_path / "planted-ran"
    (run_dir / "numpy.py").write_text(f"open({str(marker)!r}, 'w').write('x')\nraise SystemExit(3)\n")
    monkeypatch.chdir(run_dir)
    r = invoke("verify", ".", "--target", tiny_run["target"], "--force")
    assert not marker.exists()
    assert r.exit_code == 0, r.output


def test_output_files_follow_the_users_umask(tiny_run):
    import stat

    mode = stat.S_IMODE((tiny_run["out"] / "manifest.json").stat().st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask


def test_engine_json_lists_the_graph_passes_in_the_order_they_ran(tiny_run):
    """Passes are registered units planned from the target: the tiny run's isa-any target builds u8u8 and
    keeps embedding tables float (its YAML), so weights_to_uint8 runs and int8_embedding_tables does not."""
    from edgeft.backends import ort_passes

    meta = json.loads((tiny_run["out"] / "compile/test-int8/engine/engine.json").read_text())
    names = [p["name"] for p in meta["passes"]]
    assert names == ["dedupe_qdq", "gemm_bias_int32", "complete_conv_qdq", "activations_to_uint8", "weights_to_uint8",
                     "fuse_attention", "onnxruntime_optimizer (extended)", "fold_bias_into_int8_matmul",
                     "pack_qkv_attention"]
    exact = {p["name"]: p["exact"] for p in meta["passes"]}
    assert exact["activations_to_uint8"] and exact["weights_to_uint8"] and not exact["gemm_bias_int32"]
    assert meta["qdq_rewrites"]["weights_to_uint8"] == next(p["result"] for p in meta["passes"]
                                                             if p["name"] == "weights_to_uint8") > 0
    fp32 = json.loads((tiny_run["out"] / "compile/test-int8/fp32-reference/engine.json").read_text())
    assert [p["name"] for p in fp32["passes"]] == ["fuse_attention", "onnxruntime_optimizer (extended)",
                                                   "pack_qkv_attention"]
    with pytest.raises(ValueError, match="registered twice"):
        ort_passes.register(type("Again", (ort_passes.GraphPass,), {"name": "dedupe_qdq", "exact": True}))


def test_the_shipped_auto_calibration_end_to_end(tiny_run, tmp_path):
    """The suite calibrates with max for time (conftest); this run uses the shipped auto method, on fewer
    samples, through every stage."""
    import yaml

    from tests.conftest import REPO

    spec = yaml.safe_load((REPO / "calibration/default.yaml").read_text())
    assert spec["method"] == "auto"
    calib = tmp_path / "auto-small.yaml"
    calib.write_text(yaml.safe_dump({**spec, "name": "auto-small", "num_samples": 32, "selection_samples": 16}))
    out = tmp_path / "auto"
    args = [a if a != tiny_run["out"] else out for a in tiny_run["args"]] + ["--calibration", calib]
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    auto = json.loads((out / "finetune/metrics.json").read_text())["calibration"]["auto"]
    assert auto["units"] > 0 and auto["error"] <= auto["role_error"] <= min(auto["single_method_error"].values())
    assert "calibration auto (evaluations)" in r.output
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "passed"


def test_stage_commands_work_where_the_training_data_is_not(tiny_run, tmp_path):
    """`edgeft verify RUN_DIR` on a device: the recorded data path does not exist there; only finetune needs it."""
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run["out"], run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["config"]["data"] = str(tmp_path / "gone.csv")
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    r = invoke("verify", run_dir, "--force")
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    del manifest["config"]
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    r = invoke("verify", run_dir)
    assert r.exit_code == 1 and "no recorded config" in r.output and "Traceback" not in r.output


def test_what_an_interrupted_first_run_leaves_does_not_block_its_resume(tmp_path):
    from edgeft.manifest import Manifest
    from edgeft.pipeline import _check_owned

    run_dir = tmp_path / "run"
    for p in (".finetune.ckpt/checkpoint-25/model.safetensors", "tensorboard/events", ".finetune.tmp/x", "edgeft.log"):
        (run_dir / p).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / p).write_text("x")
    _check_owned(run_dir, Manifest.load(run_dir))          # no error: all of it is edgeft's


def test_run_directories_of_the_previous_manifest_schema_stay_usable(tiny_run, tmp_path):
    """Schema 1 recorded only some files of a stage and no published reports: such a run still verifies."""
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run["out"], run_dir)
    m = json.loads((run_dir / "manifest.json").read_text())
    m["schema_version"] = 1
    m.pop("reports")
    m["artifacts"] = [a for a in m["artifacts"] if a["kind"] != "file"]     # sidecars were not recorded then
    (run_dir / "manifest.json").write_text(json.dumps(m))
    r = invoke("compile", run_dir, "--target", tiny_run["target"], "--force")
    assert r.exit_code == 0, r.output


def test_library_use_resolves_host_and_shares_the_lock_in_one_process(tmp_path, monkeypatch):
    from edgeft.config import build_config
    from edgeft.pipeline import RunContext

    monkeypatch.setenv("EDGEFT_CPU_FLAGS", "sse2 avx2")
    cfg = build_config({"out": tmp_path / "lib"})
    with RunContext.open(cfg) as a, RunContext.open(cfg) as b:
        assert a.config.targets == b.config.targets == ["x86-avx2-int8"]
    with RunContext.open(cfg):
        pass


def test_report_has_latency_over_the_test_split_at_each_inputs_length(tiny_run):
    report = json.loads((tiny_run["out"] / "report.json").read_text())
    for e in report["engines"]:
        t = e["test_split_latency_ms"]
        n = report["test_examples"]
        assert 0 < t["p50_ms"] <= t["p99_ms"] and t["inputs"] == n - min(5, n // 10)     # warm-up calls left out
    assert "## Latency on the test split" in (tiny_run["out"] / "report.md").read_text()
