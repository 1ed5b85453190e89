"""Accuracy-driven fallback on a model made to fail: one block's activation quantizer gets a huge range
(what a huge activation outlier does under max calibration: every normal value rounds to 0), so INT8
loses the task; the fallback keeps the most sensitive blocks in FP32 until the accuracy gates pass.
The pooler is the block broken here: it has no residual path around it, so the damage is total."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from edgeft.cli.commands import cli

pytestmark = pytest.mark.filterwarnings("ignore")
BROKEN = "bert.pooler"


def _break_block(out, labels):
    """Give BROKEN's input quantizer amax=1e4: every normal activation rounds to 0 there."""
    from edgeft.manifest import Manifest
    from edgeft.models.hf_text import load_classifier
    from edgeft.quant import modelopt_int8

    qm = modelopt_int8.restore(load_classifier(out / "finetune/baseline", labels), out / "finetune/qat/modelopt_state.pth")
    qm.bert.pooler.dense.input_quantizer.amax = torch.tensor(1e4)
    modelopt_int8.save(qm, out / "finetune/qat")
    metrics = json.loads((out / "finetune/metrics.json").read_text())
    metrics["qat"]["sensitivity"] = sorted(metrics["qat"]["sensitivity"], key=lambda r: r["block"] != "classifier")
    (out / "finetune/metrics.json").write_text(json.dumps(metrics))   # stale order on purpose: BROKEN is not first
    m = Manifest.load(out)                       # the broken model is now this run's QAT artifact
    m.record("finetune", m.data["stages"]["finetune"]["fingerprint"], m.by_stage("finetune"), 0.0)
    m.save()


def test_fallback_keeps_sensitive_blocks_in_fp32_until_the_gate_passes(tiny_model_dir, intents_csv, tmp_path):
    target = tmp_path / "t.yaml"
    target.write_text("name: fb\nbackend: onnxruntime-cpu\nprecision: int8\ndevice: {kind: cpu, isa: any, threads: 1}\n"
                      "input_shapes: {input_ids: {min: [1, 1], opt: [1, 16], max: [4, 64]}}\n"
                      "gates: {agreement: {min_top1: 0.9}}\nonnxruntime: {int8_embeddings: false}\n")
    out = tmp_path / "out"
    base = ["run", "--model", str(tiny_model_dir), "--data", str(intents_csv), "--text-column", "utterance",
            "--label-column", "category", "--epochs", "6", "--lr", "3e-3", "--batch-size", "8", "--max-length", "32",
            "--target", str(target), "--out", str(out)]
    r = CliRunner().invoke(cli, base + ["--quant", "ptq"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    labels = json.loads((out / "finetune/data/labels.json").read_text())
    _break_block(out, labels)

    r = CliRunner().invoke(cli, base + ["--quant", "ptq", "--fallback", "4"], catch_exceptions=False)
    assert "finetune: up to date" in r.output, "the broken QAT model must be the one exported"
    report = json.loads((out / "report.json").read_text())
    fb = report["fallback"]
    first, last = fb["rounds"][0], fb["rounds"][-1]
    assert first["engines"]["fb"]["top1_agreement"] < 0.9, "the broken block must fail the gate first"
    assert fb["resolved"] and r.exit_code == 0, r.output
    assert BROKEN in fb["kept_fp32"] and last["engines"]["fb"]["top1_agreement"] >= 0.9
    assert all(rd["engines"]["fb"]["p50_ms"] > 0 for rd in fb["rounds"]), "each round's latency is recorded"
    assert "## Accuracy fallback (resolved)" in (out / "report.md").read_text()
    assert json.loads((out / "manifest.json").read_text())["config"]["keep_fp32"] == fb["kept_fp32"]
    # the fallback's report is re-recorded: verify on the same run is up to date, not "changed"
    r = CliRunner().invoke(cli, ["verify", str(out)], catch_exceptions=False)
    assert r.exit_code == 0 and "verify: up to date" in r.output, r.output

    # a time budget that is already spent: no rebuild round, the report says why the gate still fails
    r = CliRunner().invoke(cli, base + ["--quant", "ptq", "--fallback", "4", "--fallback-minutes", "1e-9"],
                           catch_exceptions=False)
    fb = json.loads((out / "report.json").read_text())["fallback"]
    assert r.exit_code == 3 and fb["stopped_by"] == "time" and len(fb["rounds"]) == 1 and not fb["resolved"]


def test_sensitivity_ranks_the_block_with_the_outlier_first(tiny_model_dir):
    from edgeft.models.hf_text import load_classifier, load_tokenizer
    from edgeft.quant.modelopt_int8 import quantize
    from edgeft.quant.sensitivity import sensitivity

    torch.manual_seed(0)
    tok = load_tokenizer(tiny_model_dir)
    model = load_classifier(tiny_model_dir, ["a", "b", "c"]).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0, 3.0)
    feeds = tok(["turn on the lights", "play jazz", "weather tomorrow", "lock the door", "stop music now"] * 4,
                padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = model(**feeds).logits.argmax(-1)
    model = quantize(model, lambda: iter([feeds]))
    model.bert.pooler.dense.input_quantizer.amax = torch.tensor(1e4)

    def agreement():
        with torch.no_grad():
            return float((model(**feeds).logits.argmax(-1) == ref).float().mean())

    steps: list[tuple] = []
    rows = sensitivity(model, agreement, progress=lambda *step: steps.append(step))
    assert rows[0]["block"] == BROKEN and rows[0]["cost"] > rows[-1]["cost"]
    assert [s[:2] for s in steps] == [(1, 4), (2, 4), (3, 4), (4, 4)] and any(BROKEN in s[2] for s in steps)
    assert {r["block"] for r in rows} == {"bert.encoder.layer.0", "bert.encoder.layer.1", "bert.pooler", "classifier"}
