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

import shutil
from pathlib import Path

import numpy as np

from edgeft.calibration import batches, fingerprint as calib_fingerprint, load_calibration
from edgeft.data.loading import SplitData, save_splits
from edgeft.fileio import write_json_atomic
from edgeft.manifest import Artifact

NAME = "finetune"


def fingerprint(ctx) -> str:
    cfg = ctx.config
    data = ctx.splits()
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

    from edgeft.models.hf_text import Encoded, load_tokenizer, resolve_model_path

    cfg = ctx.config
    data = ctx.splits()
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
    model, baseline = _baseline(ctx, model_path, tok, data, ds, work)
    qat, calibration = _quantization_aware(ctx, model, tok, data, ds, work)
    metrics = {"device": device, "labels": data.labels, "data_fingerprint": data.fingerprint(),
               "data_report": data.report, "baseline": baseline, "qat": qat, "calibration": calibration}
    write_json_atomic(work / "metrics.json", metrics)
    ctx.manifest.data["data"] = {"fingerprint": data.fingerprint(), "report": data.report,
                                 "calibration_fingerprint": metrics["calibration"]["fingerprint"]}
    base_test, q_test = baseline["test_accuracy"], qat["test_accuracy"]
    weights = f"{NAME}/baseline/model.safetensors"
    return [
        *(Artifact(f"data/{n}", "data/split", NAME) for n in ("train.jsonl", "validation.jsonl", "test.jsonl", "labels.json", "report.json")),
        Artifact("baseline/model.safetensors", "model/pytorch-fp32", NAME, metrics={"test_accuracy": base_test}),
        Artifact("baseline_test_logits.npy", "predictions/baseline-test", NAME, parents=[weights]),
        Artifact("qat/modelopt_state.pth", "model/pytorch-int8-fakequant", NAME, parents=[weights],
                 metrics={"test_accuracy": q_test}),
        Artifact("metrics.json", "metrics/finetune", NAME),
    ]


def _baseline(ctx, model_path: Path, tok, data: SplitData, ds: dict, work: Path):
    """Fine-tune in FP32 (best validation epoch kept); save it and its test logits."""
    from edgeft.models.hf_text import load_classifier

    cfg = ctx.config
    args = _training_args(cfg, work / ".ckpt", epochs=cfg.train.epochs, lr=cfg.train.lr, eval_each_epoch=True)
    trainer = _trainer(load_classifier(model_path, data.labels), tok, args, ds["train"], ds["validation"])
    trainer.train()
    shutil.rmtree(work / ".ckpt", ignore_errors=True)
    history = [h for h in trainer.state.log_history if "eval_accuracy" in h]
    val, _ = _evaluate(trainer, ds["validation"])
    test, logits = _evaluate(trainer, ds["test"])
    ctx.log(f"finetune: FP32 baseline accuracy validation {val:.4f}, test {test:.4f}")
    trainer.model.save_pretrained(work / "baseline")
    tok.save_pretrained(work / "baseline")
    np.save(work / "baseline_test_logits.npy", logits.astype(np.float32))
    return trainer.model, {"validation_accuracy": val, "test_accuracy": test, "epochs": history}


def _quantization_aware(ctx, model, tok, data: SplitData, ds: dict, work: Path):
    """Insert INT8 quantizers, calibrate on the calibration set, train briefly at a lower lr (QAT)."""
    from edgeft.quant import modelopt_int8

    cfg = ctx.config
    calib = load_calibration(cfg.calibration)
    texts = [e.text for e in getattr(data, calib.split)]

    def calib_batches():
        for chunk in batches(texts, calib):
            yield tok(chunk, truncation=True, max_length=calib.max_length, padding=True, return_tensors="pt")

    ctx.log(f"finetune: INT8 calibration on {min(calib.num_samples, len(texts))} {calib.split} samples")
    qmodel = modelopt_int8.quantize(model, calib_batches)
    epochs = cfg.train.qat_epochs or 1          # with 0 (PTQ only) the trainer is used for evaluation alone
    args = _training_args(cfg, work / ".ckpt", epochs=epochs,
                          lr=cfg.train.lr * cfg.train.qat_lr_scale, eval_each_epoch=False)
    trainer = _trainer(qmodel, tok, args, ds["train"], ds["validation"])
    if cfg.train.qat_epochs > 0:
        ctx.log(f"finetune: quantization-aware training, {cfg.train.qat_epochs} epoch(s)")
        trainer.train()
    shutil.rmtree(work / ".ckpt", ignore_errors=True)
    val, _ = _evaluate(trainer, ds["validation"])
    test, _ = _evaluate(trainer, ds["test"])
    ctx.log(f"finetune: INT8 fake-quant accuracy validation {val:.4f}, test {test:.4f}")
    modelopt_int8.save(trainer.model, work / "qat")
    qat = {"mode": "qat" if cfg.train.qat_epochs > 0 else "ptq", "validation_accuracy": val, "test_accuracy": test,
           "quantizers": modelopt_int8.count_quantizers(trainer.model)}
    return qat, {**calib.model_dump(), "fingerprint": calib_fingerprint(texts, calib)}


def _log_data(ctx, data: SplitData) -> None:
    r = data.report
    dropped = ", ".join(f"{k}={v}" for k, v in r["dropped"].items()) or "none"
    ctx.log(f"data: {r['counts']} rows; dropped: {dropped}; labels: {data.labels}")
    ctx.log(f"data: classes before cleaning {r['class_distribution_before']}, "
            f"train after {r['class_distribution']['train']} (full report: finetune/data/report.json)")
