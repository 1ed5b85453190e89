"""ModelOpt INT8 quantization: the config edgeft uses and the calibration methods."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore")


def _amax(model) -> dict[str, float]:
    from modelopt.torch.quantization.nn import TensorQuantizer

    return {n: float(q.amax) for n, q in model.named_modules()
            if isinstance(q, TensorQuantizer) and q.is_enabled and n.endswith("input_quantizer")}


def _quantized(tiny_model_dir, method):
    import torch

    from edgeft.models.hf_text import load_classifier, load_tokenizer
    from edgeft.quant.modelopt_int8 import quantize

    torch.manual_seed(0)
    tok = load_tokenizer(tiny_model_dir)
    model = load_classifier(tiny_model_dir, ["a", "b"])
    texts = ["turn on the kitchen lights please", "play some jazz", "what is the weather tomorrow"] * 8

    def batches():
        for i in range(0, len(texts), 8):
            yield tok(texts[i:i + 8], padding=True, return_tensors="pt")

    return quantize(model, batches, method, 99.0)


def test_layernorm_inputs_are_not_quantized_and_linears_are(tiny_model_dir):
    from modelopt.torch.quantization.nn import TensorQuantizer

    model = _quantized(tiny_model_dir, "max")
    enabled = {n for n, q in model.named_modules() if isinstance(q, TensorQuantizer) and q.is_enabled}
    assert "bert.encoder.layer.0.attention.self.query.input_quantizer" in enabled
    assert "bert.encoder.layer.0.attention.self.query.weight_quantizer" in enabled
    assert not any("LayerNorm" in n for n in enabled)


def test_percentile_calibration_clips_below_max_and_entropy_runs(tiny_model_dir):
    mx, pc, en = (_amax(_quantized(tiny_model_dir, m)) for m in ("max", "percentile", "entropy"))
    assert set(mx) == set(pc) == set(en) and mx
    assert all(pc[k] <= mx[k] * 1.001 for k in mx)
    assert sum(pc[k] < 0.99 * mx[k] for k in mx) >= len(mx) // 2, "the 99th percentile trims most ranges"
    assert all(v > 0 for v in en.values())


def test_unknown_method_is_refused(tiny_model_dir):
    with pytest.raises(ValueError, match="unknown calibration method"):
        _quantized(tiny_model_dir, "kl")


def test_snapped_embedding_tables_are_what_the_engine_stores(tiny_model_dir):
    """The finetune stage puts large tables on the engine's per-row int8 grid and freezes them: the ORT
    pass then stores exactly those values, and small tables (positions) stay float and trainable."""
    import numpy as np
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from edgeft.backends.qdq_ort import int8_embedding_tables
    from edgeft.models.hf_text import load_classifier
    from edgeft.quant.modelopt_int8 import snap_embeddings

    model = load_classifier(tiny_model_dir, ["a", "b"])
    words, positions = model.bert.embeddings.word_embeddings, model.bert.embeddings.position_embeddings
    before_w, before_p = words.weight.detach().clone(), positions.weight.detach().clone()
    info = snap_embeddings(model)
    assert info["tables"] == ["bert.embeddings.word_embeddings"] and 0 < info["max_abs_change"] < 0.01
    assert not words.weight.requires_grad and positions.weight.requires_grad
    assert torch.equal(positions.weight, before_p) and not torch.equal(words.weight, before_w)

    table = words.weight.detach().numpy()
    graph = helper.make_graph([helper.make_node("Gather", ["W", "ids"], ["out"], name="g")], "g",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, table.shape[1]])],
                              [numpy_helper.from_array(table, "W")])
    info = int8_embedding_tables(graph)
    assert info["int8_embedding_tables"] == 1 and info["embedding_max_abs_error"] < 1e-6
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    np.testing.assert_allclose(inits["W_int8"] * inits["W_row_scale"], table, rtol=0, atol=1e-6)


def test_auto_calibration_chooses_per_role_no_worse_than_any_single_method(tiny_model_dir):
    """``auto``: one method per role, chosen on an error function, then a per-unit pass; each step is at
    least as close as the one before, and q/k/v (one input tensor) keep one shared scale."""
    import copy

    import torch

    from edgeft.models.hf_text import load_classifier, load_tokenizer
    from edgeft.quant.modelopt_int8 import quantize

    torch.manual_seed(0)
    tok = load_tokenizer(tiny_model_dir)
    model = load_classifier(tiny_model_dir, ["a", "b"]).eval()
    texts = ["turn on the kitchen lights please", "play some jazz", "what is the weather tomorrow",
             "set an alarm for seven", "dim the bedroom lamp"] * 4
    feeds = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = model(**feeds).logits

    def error(m):
        with torch.no_grad():
            return float(((m(**feeds).logits - reference) ** 2).mean())

    def batches():
        for i in range(0, len(texts), 5):
            yield tok(texts[i:i + 5], padding=True, return_tensors="pt")

    report: dict = {}
    steps: list[tuple] = []
    q = quantize(copy.deepcopy(model), batches, "auto", 99.9, error=error, report=report,
                 progress=lambda *step: steps.append(step))
    roles, units = len(report["chosen"]), report["units"]
    total = 3 + roles * 2 + units * 6           # each role tries the 2 other methods, each unit its 6 other ranges
    assert [s[:2] for s in steps] == [(i, total) for i in range(1, total + 1)]
    assert steps[-1][2] == f"unit {units}/{units}: error {report['error']:.4f}"
    assert steps[2 + roles * 2][2] == f"role {roles}/{roles}: error {report['role_error']:.4f}"
    assert set(report["single_method_error"]) == {"max", "entropy", "percentile"}
    assert report["role_error"] <= min(report["single_method_error"].values()) + 1e-12
    assert report["error"] <= report["role_error"] + 1e-12              # the per-unit pass only keeps gains
    assert abs(error(q) - report["error"]) < 1e-9                       # the model is left with the chosen mix
    assert 0 < len(report["refined"]) <= report["units"]                # this tiny model gains from it
    assert "bert.encoder.layer.#.output.dense" in report["chosen"]
    qkv = [r for r in report["chosen"] if "attention.self.query" in r]
    assert len(qkv) == 1 and "attention.self.key" in qkv[0] and "attention.self.value" in qkv[0]
    layer = q.bert.encoder.layer[0].attention.self
    assert float(layer.query.input_quantizer.amax) == float(layer.key.input_quantizer.amax) == float(layer.value.input_quantizer.amax)
    with pytest.raises(ValueError, match="error function"):
        quantize(copy.deepcopy(model), batches, "auto")


def test_quantize_and_restore_leave_no_files_in_the_temp_folder(tiny_model_dir, tmp_path):
    """ModelOpt writes a modelopt_*.py per generated attention class into the temp folder and keeps it;
    edgeft's calls leave the temp folder as they found it. A fresh process: ModelOpt generates the class
    once per process."""
    import os
    import subprocess
    import sys

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = f"""
import torch
from edgeft.models.hf_text import load_classifier, load_tokenizer
from edgeft.quant import modelopt_int8
tok = load_tokenizer({str(tiny_model_dir)!r})
model = load_classifier({str(tiny_model_dir)!r}, ["a", "b"])
batches = lambda: [tok(["turn on the lights", "play jazz"], return_tensors="pt", padding=True)]
q = modelopt_int8.quantize(model, batches, "max")
path = modelopt_int8.save(q, __import__("pathlib").Path({str(tmp_path / "state")!r}))
modelopt_int8.restore(load_classifier({str(tiny_model_dir)!r}, ["a", "b"]), path)
print("quantizers", modelopt_int8.count_quantizers(q)["enabled"])
"""
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          cwd=str(REPO_ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "quantizers" in proc.stdout and "saved to" in proc.stdout + proc.stderr     # ModelOpt did write one
    assert sorted(p.name for p in tmp.iterdir()) == []


def test_keep_fp32_takes_a_block_or_one_layer_and_refuses_unknown_names(tiny_model_dir):
    from modelopt.torch.quantization.nn import TensorQuantizer

    from edgeft.quant.sensitivity import keep_in_high_precision

    def enabled(model) -> set[str]:
        return {n.rsplit(".", 1)[0] for n, q in model.named_modules() if isinstance(q, TensorQuantizer) and q.is_enabled}

    model = _quantized(tiny_model_dir, "max")
    before = enabled(model)
    assert keep_in_high_precision(model, ["bert.encoder.layer.1.output.dense"]) == 2     # its input + weight
    assert before - enabled(model) == {"bert.encoder.layer.1.output.dense"}
    block = {n for n in before if n.startswith("bert.encoder.layer.0.")}
    assert len(block) == 6 and keep_in_high_precision(model, ["bert.encoder.layer.0"]) == 12
    assert before - enabled(model) == block | {"bert.encoder.layer.1.output.dense"}
    with pytest.raises(ValueError, match=r"bert.encoder.layer.7.*blocks: .*bert.encoder.layer.1"):
        keep_in_high_precision(model, ["bert.encoder.layer.7"])
    with pytest.raises(ValueError, match="'bert.encoder.layer.1.out'"):      # a prefix is not a module path
        keep_in_high_precision(model, ["bert.encoder.layer.1.out"])


def test_auto_prefix_cache_chooses_exactly_what_full_evaluation_chooses(tiny_model_dir):
    """The per-unit pass reuses the output of the blocks below a unit: same choices and error as
    evaluating the whole model for every candidate, with the lower blocks run far less often."""
    import copy

    import torch

    from edgeft.models.hf_text import load_classifier, load_tokenizer
    from edgeft.quant.modelopt_int8 import quantize

    torch.manual_seed(0)
    tok = load_tokenizer(tiny_model_dir)
    model = load_classifier(tiny_model_dir, ["a", "b"]).eval()
    texts = ["turn on the kitchen lights please", "play some jazz", "what is the weather tomorrow",
             "set an alarm for seven", "dim the bedroom lamp", "lock the front door"] * 3
    feeds = [tok(texts[i:i + 6], padding=True, return_tensors="pt") for i in range(0, len(texts), 6)]
    with torch.no_grad():
        reference = [model(**f).logits for f in feeds]

    def error(m):
        with torch.no_grad():
            return float(sum(((m(**f).logits - r) ** 2).mean() for f, r in zip(feeds, reference)))

    layer_class = type(model.bert.encoder.layer[0])
    calls = {"n": 0}
    real = layer_class.forward

    def counted(self, *a, **k):
        calls["n"] += 1
        return real(self, *a, **k)

    results = {}
    for cache in (True, False):
        calls["n"] = 0
        report: dict = {}
        layer_class.forward = counted
        try:
            q = quantize(copy.deepcopy(model), lambda: iter(feeds), "auto", 99.9, error=error, report=report,
                         prefix_cache=cache)
        finally:
            layer_class.forward = real
        results[cache] = (report, calls["n"], error(q))
    (cached, n_cached, e_cached), (full, n_full, e_full) = results[True], results[False]
    assert cached["chosen"] == full["chosen"] and cached["refined"] == full["refined"]
    assert cached["error"] == full["error"] and e_cached == e_full
    assert n_cached < 0.8 * n_full, (n_cached, n_full)


def test_restoring_a_state_file_never_runs_code_from_it(tiny_model_dir, tmp_path, monkeypatch):
    """A modelopt_state.pth carrying a pickled call is refused, even with the variable that turns torch's
    weights-only default off; the call never runs."""
    import os
    import pickle

    import torch

    from edgeft.models.hf_text import load_classifier
    from edgeft.quant.modelopt_int8 import restore

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    state = tmp_path / "modelopt_state.pth"
    torch.save({"modelopt_state": Payload(), "model_state_dict": {}}, state, pickle_module=pickle)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(pickle.UnpicklingError):
        restore(load_classifier(tiny_model_dir, ["a", "b"]), state)
    assert not marker.exists()


def test_every_calibration_method_the_configs_accept_is_registered():
    """The config's choices and the registry are one list: a method added to one and not the other fails."""
    from typing import get_args

    from edgeft.calibration import CalibrationSpec
    from edgeft.config import RunConfig
    from edgeft.quant.modelopt_int8 import CALIBRATION_METHODS

    allowed = set(get_args(CalibrationSpec.model_fields["method"].annotation))
    run_allowed = set(get_args(get_args(RunConfig.model_fields["calib_method"].annotation)[0]))
    assert allowed == run_allowed == set(CALIBRATION_METHODS)
    assert [m for m, c in CALIBRATION_METHODS.items() if c.needs_error] == ["auto"]
