"""Training controls through `edgeft finetune` on the tiny BERT: they change what training does."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgeft.cli.commands import cli

pytestmark = pytest.mark.filterwarnings("ignore")


def finetune(out, model, data, *extra):
    args = ["finetune", str(out), "--model", str(model), "--data", str(data), "--text-column", "utterance",
            "--label-column", "category", "--max-length", "32", "--qat-epochs", "0", *map(str, extra)]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return json.loads((out / "finetune/metrics.json").read_text()), r.output


def test_early_stopping_stops_when_validation_stalls(tiny_model_dir, intents_csv, tmp_path):
    m, _ = finetune(tmp_path / "o", tiny_model_dir, intents_csv, "--epochs", "6", "--lr", "1e-12",
                    "--early-stopping", "1")
    assert m["baseline"]["stopped_at_epoch"] == pytest.approx(2.0)
    assert len(m["baseline"]["epochs"]) == 2


def test_gradual_unfreeze_trains_head_then_top_blocks_and_keeps_the_rest(tiny_model_dir, intents_csv, tmp_path):
    m, _ = finetune(tmp_path / "o", tiny_model_dir, intents_csv, "--epochs", "3", "--lr", "1e-2", "--gradual-unfreeze")
    assert [e["blocks_trainable"] for e in m["baseline"]["unfreeze_schedule"]] == [0, 1, 2]


def test_gradual_unfreeze_callback_freezes_what_it_says(tiny_model_dir, tmp_path):
    """Two epochs, last epoch kept: the top block trained in epoch 2; embeddings and the bottom block never."""
    import torch
    from transformers import DataCollatorWithPadding

    from edgeft.config import TrainConfig
    from edgeft.models.hf_text import Encoded, load_classifier, load_tokenizer
    from edgeft.training import make_trainer, training_args

    tok = load_tokenizer(tiny_model_dir)
    ds = Encoded(tok, ["turn on the lights", "play jazz", "lights off", "stop the music"] * 8, [0, 1, 0, 1] * 8, 16)
    model = load_classifier(tiny_model_dir, ["a", "b"])
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(gradual_unfreeze=True, imbalance="none")
    args = training_args(cfg, 0, tmp_path / "ckpt", epochs=2, lr=1e-2, evaluate=True)
    args.load_best_model_at_end = False
    trainer = make_trainer(model, args, ds, ds, DataCollatorWithPadding(tok), cfg, [0, 1] * 16, 2)
    trainer.train()
    end = {k: v.cpu() for k, v in model.state_dict().items()}      # trained on CUDA where there is one
    same = {k for k in start if torch.equal(start[k], end[k])}
    assert "bert.embeddings.word_embeddings.weight" in same
    assert "bert.encoder.layer.0.attention.self.query.weight" in same
    assert "bert.encoder.layer.1.attention.self.query.weight" not in same
    assert "classifier.weight" not in same


def test_dropout_override_and_class_weights_recorded(tiny_model_dir, tmp_path):
    from tests.conftest import write_csv

    rows = [{"utterance": f"turn on light {i}", "category": "on"} for i in range(40)]
    rows += [{"utterance": f"music {i} please", "category": "music"} for i in range(8)]
    data = write_csv(tmp_path / "imb.csv", rows)
    m, out = finetune(tmp_path / "o", tiny_model_dir, data, "--epochs", "1", "--dropout", "0.3")
    assert m["baseline"]["imbalance"] == "weights" and "imbalance handling: weights" in out
    cfg = json.loads((tmp_path / "o/finetune/baseline/config.json").read_text())
    assert cfg["hidden_dropout_prob"] == 0.3 and cfg["attention_probs_dropout_prob"] == 0.3


def test_search_trains_every_trial_and_keeps_the_best(tiny_model_dir, intents_csv, tmp_path):
    m, out = finetune(tmp_path / "o", tiny_model_dir, intents_csv, "--epochs", "1",
                      "--search", "lr=1e-12,3e-3", "--search", "batch_size=8,16", "--search-trials", "3")
    trials = m["baseline"]["search"]
    assert len(trials) == 3 and "search trial 3/3" in out
    best = max(trials, key=lambda t: t["validation_accuracy"])
    assert m["baseline"]["params"] == best["params"]
    assert m["baseline"]["validation_accuracy"] == pytest.approx(best["validation_accuracy"])
    assert all(isinstance(t["params"]["batch_size"], int) for t in trials if "batch_size" in t["params"])


def test_report_to_tensorboard_writes_event_files(tiny_model_dir, intents_csv, tmp_path):
    finetune(tmp_path / "o", tiny_model_dir, intents_csv, "--epochs", "1", "--report-to", "tensorboard")
    events = list((tmp_path / "o/tensorboard").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_qat_distillation_from_the_baseline_runs_and_is_recorded(tiny_model_dir, intents_csv, tmp_path):
    m, _ = finetune(tmp_path / "o", tiny_model_dir, intents_csv, "--epochs", "1", "--qat-epochs", "1",
                    "--qat-distill", "0.5", "--lr", "3e-3")
    assert m["qat"]["mode"] == "qat" and m["qat"]["distill"] == 0.5
    assert 0.0 <= m["qat"]["test_accuracy"] <= 1.0
    r = CliRunner().invoke(cli, ["finetune", str(tmp_path / "x"), "--qat-distill", "1.5"])
    assert r.exit_code == 1 and "train.qat_distill" in r.output and "less than or equal to 1" in r.output


def test_changing_only_qat_settings_reuses_the_fp32_baseline(tiny_model_dir, intents_csv, tmp_path):
    out = tmp_path / "o"
    m1, log1 = finetune(out, tiny_model_dir, intents_csv, "--epochs", "1")
    assert "baseline reused" not in log1
    weights = (out / "finetune/baseline/model.safetensors").read_bytes()
    m2, log2 = finetune(out, tiny_model_dir, intents_csv, "--epochs", "1", "--qat-epochs", "1", "--qat-distill", "0.3")
    assert "FP32 baseline reused" in log2 and m2["qat"]["mode"] == "qat" and m2["qat"]["distill"] == 0.3
    assert (out / "finetune/baseline/model.safetensors").read_bytes() == weights
    assert m2["baseline"] == m1["baseline"]
    _, log3 = finetune(out, tiny_model_dir, intents_csv, "--epochs", "1", "--qat-epochs", "1", "--qat-distill",
                       "0.3", "--force")
    assert "baseline reused" not in log3                                  # --force retrains everything
    _, log4 = finetune(out, tiny_model_dir, intents_csv, "--epochs", "1", "--lr", "5e-4")
    assert "baseline reused" not in log4                                  # a baseline setting changed
