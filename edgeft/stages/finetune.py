"""Stage ``finetune``: supervised fine-tuning (the FP32 baseline), then INT8 quantization-aware training.

Reads (config): model, data, eval_data, text_column, label_column, seed, train.*, split.*, calibration.
Writes (``finetune/``):
    data/{train,validation,test}.jsonl, data/labels.json   the exact splits every later stage uses
    baseline/                                              the FP32 model + tokenizer (save_pretrained)
    baseline_test_logits.npy                               baseline logits on the test split (verify uses them)
    qat/modelopt_state.pth                                 the quantized model (ModelOpt state + weights)
    metrics.json                                           baseline and QAT metrics, data report, calibration
Runs on CUDA when present, CPU otherwise. Training uses transformers ``Trainer``.

Raises:
    DataError: unusable data (see edgeft.data.loading).  ConfigError: bad model folder or calibration.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from edgeft.calibration import batches, fingerprint as calib_fingerprint, load_calibration
from edgeft.data.loading import SplitData, load_splits, save_splits
from edgeft.fileio import write_json_atomic
from edgeft.manifest import Artifact

NAME = "finetune"


def fingerprint(ctx) -> str:
    cfg = ctx.config
    data = load_splits(cfg)
    part = {"model": cfg.model, "data_fingerprint": data.fingerprint(), "seed": cfg.seed,
            "train": cfg.train.model_dump(), "calibration": load_calibration(cfg.calibration).model_dump()}
    if cfg.model.startswith("builtin:") or not Path(cfg.model).is_dir():
        part["model_files"] = cfg.model
    else:
        part["model_files"] = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                                     for p in Path(cfg.model).iterdir() if p.is_file())
    return ctx.fingerprint(NAME, part, [])


def _training_args(cfg, out: Path, *, epochs: float, lr: float, eval_each_epoch: bool):
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out), num_train_epochs=epochs, learning_rate=lr, max_steps=cfg.train.max_steps,
        per_device_train_batch_size=cfg.train.batch_size, per_device_eval_batch_size=64,
        weight_decay=cfg.train.weight_decay, warmup_ratio=cfg.train.warmup_ratio, seed=cfg.seed,
        eval_strategy="epoch" if eval_each_epoch else "no",
        save_strategy="epoch" if eval_each_epoch else "no", save_total_limit=1,
        load_best_model_at_end=eval_each_epoch, metric_for_best_model="accuracy",
        logging_strategy="epoch", report_to=[], use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0, save_safetensors=True, disable_tqdm=False)


def _accuracy(eval_pred) -> dict:
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, -1) == labels).mean())}


def _trainer(model, tokenizer, args, train_ds, eval_ds):
    from transformers import DataCollatorWithPadding, Trainer

    return Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                   data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=_accuracy)


def _evaluate(trainer, ds) -> tuple[float, np.ndarray]:
    out = trainer.predict(ds)
    return float((out.predictions.argmax(-1) == out.label_ids).mean()), out.predictions


def run(ctx, work: Path) -> list[Artifact]:
    import torch
    from transformers import set_seed

    from edgeft.models.hf_text import Encoded, load_classifier, load_tokenizer, resolve_model_path
    from edgeft.quant import modelopt_int8

    cfg = ctx.config
    data = load_splits(cfg)
    _log_data(ctx, data)
    save_splits(data, work / "data")
    set_seed(cfg.seed)
    model_path = resolve_model_path(cfg.model)
    tok = load_tokenizer(model_path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ctx.log(f"finetune: {model_path} on {device}, {len(data.labels)} classes, "
            f"{len(data.train)} train / {len(data.validation)} validation / {len(data.test)} test")
    ds = {s: Encoded(tok, [e.text for e in getattr(data, s)], data.label_ids(s), cfg.train.max_length)
          for s in ("train", "validation", "test")}

    model = load_classifier(model_path, data.labels)
    trainer = _trainer(model, tok, _training_args(cfg, work / ".ckpt", epochs=cfg.train.epochs,
                                                  lr=cfg.train.lr, eval_each_epoch=True), ds["train"], ds["validation"])
    trainer.train()
    history = [h for h in trainer.state.log_history if "eval_accuracy" in h]
    model = trainer.model
    shutil.rmtree(work / ".ckpt", ignore_errors=True)
    base_val, _ = _evaluate(trainer, ds["validation"])
    base_test, base_logits = _evaluate(trainer, ds["test"])
    ctx.log(f"finetune: FP32 baseline accuracy validation {base_val:.4f}, test {base_test:.4f}")
    model.save_pretrained(work / "baseline")
    tok.save_pretrained(work / "baseline")
    np.save(work / "baseline_test_logits.npy", base_logits.astype(np.float32))

    calib = load_calibration(cfg.calibration)
    calib_texts = [e.text for e in getattr(data, calib.split)]

    def calib_batches():
        for texts in batches(calib_texts, calib):
            yield tok(texts, truncation=True, max_length=calib.max_length, padding=True, return_tensors="pt")

    ctx.log(f"finetune: INT8 calibration on {min(calib.num_samples, len(calib_texts))} {calib.split} samples")
    qmodel = modelopt_int8.quantize(model, calib_batches)
    qtrainer = _trainer(qmodel, tok, _training_args(cfg, work / ".ckpt", epochs=max(cfg.train.qat_epochs, 1e-9),
                                                    lr=cfg.train.lr * cfg.train.qat_lr_scale, eval_each_epoch=False),
                        ds["train"], ds["validation"])
    if cfg.train.qat_epochs > 0:
        ctx.log(f"finetune: quantization-aware training, {cfg.train.qat_epochs} epoch(s)")
        qtrainer.train()
    shutil.rmtree(work / ".ckpt", ignore_errors=True)
    q_val, _ = _evaluate(qtrainer, ds["validation"])
    q_test, _ = _evaluate(qtrainer, ds["test"])
    ctx.log(f"finetune: INT8 fake-quant accuracy validation {q_val:.4f}, test {q_test:.4f}")
    modelopt_int8.save(qtrainer.model, work / "qat")

    metrics = {
        "device": device, "labels": data.labels, "data_fingerprint": data.fingerprint(), "data_report": data.report,
        "baseline": {"validation_accuracy": base_val, "test_accuracy": base_test, "epochs": history},
        "qat": {"mode": "qat" if cfg.train.qat_epochs > 0 else "ptq", "validation_accuracy": q_val,
                "test_accuracy": q_test, "quantizers": modelopt_int8.count_quantizers(qtrainer.model)},
        "calibration": {**calib.model_dump(), "fingerprint": calib_fingerprint(calib_texts, calib)},
    }
    write_json_atomic(work / "metrics.json", metrics)
    ctx.manifest.data["data"] = {"fingerprint": data.fingerprint(), "report": data.report,
                                 "calibration_fingerprint": metrics["calibration"]["fingerprint"]}
    weights = f"{NAME}/baseline/model.safetensors"
    return [
        *(Artifact(f"data/{n}", "data/split", NAME) for n in ("train.jsonl", "validation.jsonl", "test.jsonl", "labels.json")),
        Artifact("baseline/model.safetensors", "model/pytorch-fp32", NAME, metrics={"test_accuracy": base_test}),
        Artifact("baseline_test_logits.npy", "predictions/baseline-test", NAME, parents=[weights]),
        Artifact("qat/modelopt_state.pth", "model/pytorch-int8-fakequant", NAME, parents=[weights],
                 metrics={"test_accuracy": q_test}),
        Artifact("metrics.json", "metrics/finetune", NAME),
    ]


def _log_data(ctx, data: SplitData) -> None:
    r = data.report
    dropped = ", ".join(f"{k}={v}" for k, v in r["dropped"].items()) or "none"
    ctx.log(f"data: {r['counts']} rows; dropped: {dropped}; labels: {data.labels}")
