"""QAT on CUDA: skipped where no GPU is visible."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_finetune_and_qat_run_on_cuda(tiny_model_dir, intents_csv, tmp_path):
    from edgeft.cli.commands import cli

    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["finetune", str(out), "--model", str(tiny_model_dir), "--data", str(intents_csv),
                                 "--text-column", "utterance", "--label-column", "category", "--epochs", "1",
                                 "--max-steps", "5"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "finetune/metrics.json").read_text())
    assert metrics["device"] == "cuda"
    assert metrics["qat"]["quantizers"]["enabled"] > 0


def test_precision_auto_picks_bf16_or_fp16_on_cuda(tmp_path):
    from edgeft.config import TrainConfig
    from edgeft.training import training_args

    a = training_args(TrainConfig(precision="auto"), 0, tmp_path / "c", epochs=1, lr=1e-3, evaluate=False)
    assert a.bf16 == torch.cuda.is_bf16_supported() and a.fp16 == (not torch.cuda.is_bf16_supported())


def test_qat_on_a_reused_baseline_on_cuda(tiny_model_dir, intents_csv, tmp_path):
    """A re-run that changes only QAT settings reuses the saved baseline, which loads on the CPU while QAT
    trains on CUDA: the keep-check compares outputs across the two (on an H200 this crashed with a device
    mismatch before the outputs were brought to the CPU)."""
    from edgeft.cli.commands import cli

    out = tmp_path / "out"
    common = ["--model", str(tiny_model_dir), "--data", str(intents_csv), "--text-column", "utterance",
              "--label-column", "category", "--epochs", "1", "--max-length", "32"]
    r = CliRunner().invoke(cli, ["finetune", str(out), *common, "--quant", "ptq"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["finetune", str(out), *common, "--quant", "qat"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "FP32 baseline reused" in r.output
    fidelity = json.loads((out / "finetune/metrics.json").read_text())["qat"]["fidelity_mse"]
    assert set(fidelity) == {"calibrated", "qat", "kept"}
