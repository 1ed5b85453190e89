"""Trainer configuration: metrics, imbalance handling, loss, optimizer, blocks. Tiny model, no full runs."""
from __future__ import annotations

import numpy as np
import pytest

from edgeft.config import TrainConfig
from edgeft.training import class_weights, imbalance_mode, metrics


def test_metrics_accuracy_and_macro_f1():
    logits = np.eye(3)[[0, 0, 1, 2, 2, 2]]
    labels = np.array([0, 1, 1, 2, 2, 0])
    m = metrics((logits, labels))
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per class F1: c0 = 2*1/(2+2)=0.5, c1 = 2*1/(1+2)=0.667, c2 = 2*2/(3+2)=0.8
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)


def test_imbalance_auto_switches_to_weights_only_when_classes_differ_a_lot():
    cfg = TrainConfig()
    assert imbalance_mode(cfg, [0] * 30 + [1] * 20) == "none"
    assert imbalance_mode(cfg, [0] * 40 + [1] * 10) == "weights"
    assert imbalance_mode(cfg.model_copy(update={"imbalance": "oversample"}), [0] * 40 + [1] * 10) == "oversample"
    assert imbalance_mode(cfg.model_copy(update={"imbalance": "none"}), [0] * 40 + [1] * 10) == "none"


def test_class_weights_are_inverse_frequency_with_mean_one_per_example():
    w = class_weights([0] * 30 + [1] * 10, 2)
    assert w == pytest.approx([40 / 60, 40 / 20])
    assert (30 * w[0] + 10 * w[1]) / 40 == pytest.approx(1.0)


@pytest.fixture
def tiny_trainer_parts(tiny_model_dir, tmp_path):
    from transformers import DataCollatorWithPadding

    from edgeft.models.hf_text import Encoded, load_classifier, load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    texts = ["turn on the lights", "play jazz", "lights off", "stop music"] * 5
    labels = [0, 1, 0, 1] * 5
    ds = Encoded(tok, texts, labels, 16)
    model = load_classifier(tiny_model_dir, ["a", "b"], dropout=0.0)
    return {"tok": tok, "ds": ds, "labels": labels, "model": model, "collator": DataCollatorWithPadding(tok),
            "out": tmp_path / "ckpt"}


def _make(parts, **train):
    from edgeft.training import make_trainer, training_args

    cfg = TrainConfig(**train)
    args = training_args(cfg, 0, parts["out"], epochs=1, lr=1e-3, evaluate=False)
    return make_trainer(parts["model"], args, parts["ds"], parts["ds"], parts["collator"], cfg, parts["labels"], 2)


def test_loss_applies_label_smoothing_and_class_weights(tiny_trainer_parts):
    import types

    import torch
    import torch.nn.functional as F

    logits = torch.tensor([[3.0, -1.0], [0.5, 0.2], [-2.0, 2.0], [1.0, 1.5]])

    class FixedLogits(torch.nn.Module):        # stands in for the network: the loss is what is under test
        def forward(self, **inputs):
            return types.SimpleNamespace(logits=logits)

    batch = {"input_ids": torch.zeros(4, 3, dtype=torch.long), "labels": torch.tensor([0, 1, 1, 0])}
    y = batch["labels"]
    plain = _make(tiny_trainer_parts, imbalance="none").compute_loss(FixedLogits(), dict(batch))
    smooth = _make(tiny_trainer_parts, imbalance="none", label_smoothing=0.2).compute_loss(FixedLogits(), dict(batch))
    parts = dict(tiny_trainer_parts, labels=[0] * 15 + [1] * 5)
    weighted = _make(parts, imbalance="weights").compute_loss(FixedLogits(), dict(batch))
    assert float(plain) == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)
    assert float(smooth) == pytest.approx(float(F.cross_entropy(logits, y, label_smoothing=0.2)), rel=1e-6)
    w = torch.tensor(class_weights([0] * 15 + [1] * 5, 2))
    assert float(weighted) == pytest.approx(float(F.cross_entropy(logits, y, weight=w)), rel=1e-6)
    assert abs(float(plain) - float(smooth)) > 1e-2 and abs(float(plain) - float(weighted)) > 1e-2


def test_sgd_optimizer_and_cosine_schedule_are_used(tiny_trainer_parts):
    import torch

    t = _make(tiny_trainer_parts, optimizer="sgd", scheduler="cosine")
    t.create_optimizer_and_scheduler(num_training_steps=10)
    assert isinstance(t.optimizer, torch.optim.SGD)
    assert type(t.lr_scheduler).__name__ == "LambdaLR" and t.args.lr_scheduler_type == "cosine"


def test_oversampling_draws_rare_class_as_often_as_common(tiny_trainer_parts):
    parts = dict(tiny_trainer_parts)
    parts["labels"] = [0] * 18 + [1] * 2
    t = _make(parts, imbalance="oversample")
    idx = list(iter(t._get_train_sampler()))
    drawn = np.array(parts["labels"])[idx * 50 if len(idx) < 100 else idx]
    assert t.imbalance_mode == "oversample"
    assert 0.3 < drawn.mean() < 0.7, "rare class should be drawn about half of the time"


def test_transformer_blocks_finds_the_encoder_layers(tiny_trainer_parts):
    from edgeft.training import transformer_blocks

    blocks = transformer_blocks(tiny_trainer_parts["model"])
    assert len(blocks) == 2 and type(blocks[0]).__name__ == "BertLayer"


def test_training_args_carry_every_training_control(tmp_path):
    from edgeft.training import training_args

    cfg = TrainConfig(optimizer="sgd", scheduler="constant_with_warmup", grad_accum=4, max_grad_norm=0.5,
                      warmup_ratio=0.2, weight_decay=0.1, batch_size=8, precision="auto", best_metric="macro_f1")
    a = training_args(cfg, 3, tmp_path / "c", epochs=2, lr=1e-3, evaluate=True)
    assert (a.optim, a.lr_scheduler_type) == ("sgd", "constant_with_warmup")
    assert (a.gradient_accumulation_steps, a.max_grad_norm, a.warmup_ratio, a.weight_decay) == (4, 0.5, 0.2, 0.1)
    assert (a.per_device_train_batch_size, a.seed, a.num_train_epochs, a.learning_rate) == (8, 3, 2, 1e-3)
    assert a.metric_for_best_model == "macro_f1" and a.greater_is_better and a.load_best_model_at_end
    reg = training_args(TrainConfig(), 0, tmp_path / "c", epochs=1, lr=1e-3, evaluate=True, task="regression")
    assert reg.metric_for_best_model == "rmse" and not reg.greater_is_better


def test_precision_autocast_only_on_cuda(tmp_path):
    import torch

    from edgeft.training import training_args

    a = training_args(TrainConfig(precision="bf16"), 0, tmp_path / "c", epochs=1, lr=1e-3, evaluate=False)
    if torch.cuda.is_available():
        assert a.bf16
    else:
        assert not a.bf16 and not a.fp16, "CPU trains in fp32 whatever the precision asks"


def test_qat_distillation_blends_task_loss_with_kl_to_the_teacher(tiny_trainer_parts):
    import types

    import torch
    import torch.nn.functional as F

    from edgeft.training import DISTILL_TEMPERATURE, make_trainer, training_args

    student = torch.tensor([[3.0, -1.0], [0.5, 0.2], [-2.0, 2.0], [1.0, 1.5]])
    teacher_logits = torch.tensor([[1.0, 0.0], [2.0, -2.0], [0.0, 1.0], [-1.0, 1.0]])

    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, **inputs):
            assert "labels" not in inputs             # the teacher sees the inputs, never the labels
            return types.SimpleNamespace(logits=self.logits)

    batch = {"input_ids": torch.zeros(4, 3, dtype=torch.long), "labels": torch.tensor([0, 1, 1, 0])}
    cfg = TrainConfig(imbalance="none", qat_distill=0.25)
    args = training_args(cfg, 0, tiny_trainer_parts["out"], epochs=1, lr=1e-3, evaluate=False)

    def loss(teacher, distill, training=True):
        t = make_trainer(tiny_trainer_parts["model"], args, tiny_trainer_parts["ds"], tiny_trainer_parts["ds"],
                         tiny_trainer_parts["collator"], cfg, tiny_trainer_parts["labels"], 2,
                         teacher=teacher, distill=distill)
        s = Fixed(student).train(training)
        return float(t.compute_loss(s, dict(batch)))

    ce = float(F.cross_entropy(student, batch["labels"]))
    T = DISTILL_TEMPERATURE
    kl = float(F.kl_div(F.log_softmax(student / T, -1), F.softmax(teacher_logits / T, -1), reduction="batchmean")) * T * T
    assert loss(Fixed(teacher_logits), 0.25) == pytest.approx(0.75 * ce + 0.25 * kl, rel=1e-5)
    assert loss(Fixed(student), 1.0) == pytest.approx(0.0, abs=1e-6)        # a student equal to its teacher
    assert loss(None, 0.25) == pytest.approx(ce, rel=1e-6)                  # no teacher: plain task loss
    assert loss(Fixed(teacher_logits), 0.25, training=False) == pytest.approx(ce, rel=1e-6)  # eval: task loss


def test_evaluation_is_fp32_even_under_a_mixed_precision_trainer(tmp_path):
    """The baseline's test outputs (what every engine is compared against) and the fake-quant scores come
    from `_evaluate`: under bf16 training, Trainer wraps forward in autocast (accelerate on CUDA, CPU AMP
    here); `_evaluate` must still return the FP32 model's outputs. On an H200 the bf16-evaluated baseline
    disagreed with the FP32 ORT engine of the same weights on 0.3% of SST-2 dev."""
    import torch
    from datasets import Dataset
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    from edgeft.stages.finetune import _evaluate

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=64, num_labels=3))
    ids = torch.randint(0, 100, (24, 16))
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": [[1] * 16] * 24,
                            "labels": [i % 3 for i in range(24)]})
    args = TrainingArguments(str(tmp_path), bf16=True, use_cpu=True, per_device_train_batch_size=8, max_steps=2,
                             report_to=[], disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=ds)
    trainer.train()
    fp32 = BertForSequenceClassification(model.config).eval()
    fp32.load_state_dict(model.state_dict())
    with torch.inference_mode():
        ref = fp32(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.numpy()
    assert np.abs(trainer.predict(ds).predictions - ref).max() > 1e-6    # the rounding _evaluate must avoid
    acc, out = _evaluate(trainer, ds, "classification")
    assert np.abs(out - ref).max() < 1e-6
    assert acc == pytest.approx(float((ref.argmax(-1) == np.arange(24) % 3).mean()))
    assert trainer.use_cpu_amp                                            # the trainer itself is left as it was


def test_ddp_with_more_ranks_than_gpus_fails_early_with_the_fix(monkeypatch):
    import torch

    from edgeft.distributed import check_devices
    from edgeft.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError) as e:
        check_devices()
    assert "2 training processes" in str(e.value) and "--nproc_per_node 1" in str(e.value)
    assert "CUDA_VISIBLE_DEVICES=''" in str(e.value)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_devices()                                      # one GPU per rank
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    check_devices()                                      # CPU ranks (gloo): any number


def test_a_baseline_that_answers_one_class_is_flagged_not_a_balanced_one():
    import numpy as np

    from edgeft.stages.verify import collapsed_baseline

    y = np.array([0, 1] * 50)
    one_class = np.tile([[2.0, 0.0]], (100, 1))
    note = collapsed_baseline(one_class, y, ["neg", "pos"])
    assert note and "answers 'neg' for 100%" in note and "most common label is 50%" in note
    good = np.stack([1.0 - y, y.astype(float)], 1)
    assert collapsed_baseline(good, y, ["neg", "pos"]) is None
    lopsided = np.array([0] * 95 + [1] * 5)                    # labels this lopsided: one answer is no collapse
    assert collapsed_baseline(one_class, lopsided, ["neg", "pos"]) is None
