"""Stage ``finetune``: supervised fine-tuning (the FP32 baseline), then INT8 quantization-aware training.

Reads (config): model, data, eval_data, text_column, label_column, seed, train.*, split.*, calibration.
Writes (``finetune/``):
    data/{train,validation,test}.jsonl, data/labels.json   the exact splits every later stage uses
    baseline/                                              the FP32 model + tokenizer (save_pretrained)
    baseline_test_logits.npy                               baseline logits on the test split (verify uses them)
    qat/modelopt_state.pth                                 the quantized model (ModelOpt state + weights)
    metrics.json                                           baseline and QAT metrics, data report, calibration
    facts.json                                             task, modality, labels (``ctx.facts()`` for later stages)
    baseline_key.txt                                       what the baseline depends on (see ``baseline_key``)
When a re-run changes only calibration or QAT settings (``--qat-epochs``, ``--qat-distill``, ``--calib-method``,
...) the previous baseline is reused instead of retrained, after its files are checked against the manifest.
Runs on CUDA when present, CPU otherwise. Training uses transformers ``Trainer``.

Raises:
    DataError: unusable data (see edgeft.data.loading).  ConfigError: bad model folder or calibration.
"""
from __future__ import annotations

import contextlib

import shutil
from pathlib import Path

import numpy as np

from edgeft.artifacts import RunFacts, in_stage
from edgeft.calibration import batches, fingerprint as calib_fingerprint, load_calibration
from edgeft.data.loading import SplitData, save_splits
from edgeft.console import CONSOLE, LOG_FILE
from edgeft.distributed import check_devices
from edgeft_runtime.fileio import write_json_atomic
from edgeft.manifest import Artifact

NAME = "finetune"
DISTRIBUTED = True      # under torchrun every rank trains (Trainer runs DDP); the pipeline keeps rank 0's files


BASELINE_KEY = "baseline_key.txt"
QAT_ONLY = {"qat_epochs", "qat_lr_scale", "qat_distill", "qat_keep"}     # train.* fields the FP32 baseline does not use


def _inputs(ctx) -> dict:
    cfg = ctx.config
    data = ctx.splits()
    part = {"model": cfg.model, "weights": cfg.weights, "vision": cfg.vision.model_dump(),
            "search": cfg.search, "search_trials": cfg.search_trials,
            "data_fingerprint": data.fingerprint(), "seed": cfg.seed,
            "train": cfg.train.model_dump(), "calibration": load_calibration(cfg.calibration).model_dump(),
            "calib_method": cfg.calib_method}
    if ":" in cfg.model or not Path(cfg.model).is_dir():
        part["model_files"] = cfg.model
    else:
        part["model_files"] = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                                     for p in Path(cfg.model).iterdir() if p.is_file())
    return part


def fingerprint(ctx) -> str:
    return ctx.fingerprint(NAME, _inputs(ctx), [])


def baseline_key(ctx) -> str:
    """What the FP32 baseline depends on: the stage's inputs less calibration and the QAT settings. Not
    edgeft's code: a baseline trained by an earlier edgeft is reused (``--force`` retrains it)."""
    part = _inputs(ctx)
    part.pop("calibration")
    part.pop("calib_method")
    part["train"] = {k: v for k, v in part["train"].items() if k not in QAT_ONLY}
    return ctx.fingerprint(f"{NAME}/baseline", part, [], code=False)


def headline(task: str) -> str:
    """The metric a run is judged by: accuracy, or RMSE for regression."""
    return "rmse" if task == "regression" else "accuracy"


def _evaluate(trainer, ds, task: str) -> tuple[float, np.ndarray]:
    """The model's metric and outputs, in FP32 whatever the training precision: the baseline the engines
    are judged against and the INT8 fake-quant scores must not carry bf16 rounding."""
    from edgeft.training import predict_fp32, regression_metrics

    out = predict_fp32(trainer, ds)
    if task == "regression":
        return regression_metrics((out.predictions, out.label_ids))["rmse"], out.predictions
    return float((out.predictions.argmax(-1) == out.label_ids).mean()), out.predictions


def run(ctx, work: Path, force: bool = False) -> tuple[list[Artifact], dict]:
    """Returns the artifacts and what the manifest records about the data and training. ``force``: retrain
    the baseline even when the previous one could be reused."""
    import torch
    from transformers import set_seed

    from edgeft.models import family_for

    cfg = ctx.config
    _check_reporting(cfg.train.report_to)
    check_devices()
    data = ctx.splits()
    _log_data(ctx, data)
    save_splits(data, work / "data")
    set_seed(cfg.seed)
    family = family_for(cfg, data.modality, log=lambda msg: ctx.log(f"finetune: {msg}"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ctx.log(f"finetune: {family.describe()} on {device}, {len(data.labels)} classes, "
            f"{len(data.train)} train / {len(data.validation)} validation / {len(data.test)} test")
    ds = {s: family.dataset([e.text for e in getattr(data, s)], data.label_ids(s), train=s == "train")
          for s in ("train", "validation", "test")}
    model, baseline = _baseline(ctx, family, data, ds, work, force)
    qat, calibration = _quantization_aware(ctx, model, family, data, ds, work)
    metrics = {"device": device, "task": data.task, "modality": data.modality, "model": cfg.model, "labels": data.labels,
               "data_fingerprint": data.fingerprint(),
               "data_report": data.report, "baseline": baseline, "qat": qat, "calibration": calibration}
    write_json_atomic(work / "metrics.json", metrics)
    RunFacts(task=data.task, modality=data.modality, labels=list(data.labels)).write(work / in_stage("finetune.facts"))
    manifest_info = {"data": {"fingerprint": data.fingerprint(), "report": data.report,
                              "calibration_fingerprint": metrics["calibration"]["fingerprint"]},
                     "training": {"device": device, "seed": cfg.seed, "train_config": cfg.train.model_dump(),
                                  "baseline": baseline, "qat": qat}}
    m = headline(data.task)
    base_test, q_test = baseline[f"test_{m}"], qat[f"test_{m}"]
    weights = f"{NAME}/baseline/model.safetensors"
    return [
        *(Artifact(f"data/{n}", "data/split", NAME) for n in ("train.jsonl", "validation.jsonl", "test.jsonl", "labels.json", "report.json")),
        Artifact("baseline/model.safetensors", "model/pytorch-fp32", NAME, metrics={f"test_{m}": base_test}),
        Artifact("baseline_test_logits.npy", "predictions/baseline-test", NAME, parents=[weights]),
        Artifact("qat/modelopt_state.pth", "model/pytorch-int8-fakequant", NAME, parents=[weights],
                 metrics={f"test_{m}": q_test}),
        Artifact("metrics.json", "metrics/finetune", NAME),
        Artifact(in_stage("finetune.facts"), "meta/run-facts", NAME),
        Artifact(BASELINE_KEY, "meta/baseline-key", NAME),
    ], manifest_info


def _trainer(model, family, train_cfg, seed: int, data: SplitData, ds: dict, out: Path, *, epochs: float,
             lr: float, evaluate: bool, teacher=None):
    from edgeft.training import make_trainer, training_args

    args = training_args(train_cfg, seed, out, epochs=epochs, lr=lr, evaluate=evaluate, task=data.task)
    return make_trainer(model, args, ds["train"], ds["validation"], family.collator(), train_cfg,
                        data.label_ids("train"), len(data.labels), data.task,
                        teacher=teacher, distill=train_cfg.qat_distill if teacher is not None else 0.0)


def _train_fp32(ctx, train_cfg, family, data: SplitData, ds: dict, ckpt: Path):
    """One FP32 fine-tuning run; returns the trainer (best epoch loaded) and its summary."""
    model = family.new_model(data.labels, dropout=train_cfg.dropout, weights=ctx.config.weights)
    if data.task == "regression":
        from edgeft.training import init_regression_head

        init_regression_head(model, data.label_ids("train"))
    trainer = _trainer(model, family, train_cfg, ctx.config.seed, data, ds, ckpt, epochs=train_cfg.epochs,
                       lr=train_cfg.lr, evaluate=True)
    ctx.log(f"finetune: imbalance handling: {trainer.imbalance_mode}; {trainer.args.world_size} training process(es)")
    trainer.train()
    _drop_checkpoints(trainer, ckpt)
    history = [{k: v for k, v in h.items() if k.startswith("eval_") or k in ("epoch", "step")}
               for h in trainer.state.log_history if "eval_loss" in h]
    m = headline(data.task)
    val, _ = _evaluate(trainer, ds["validation"], data.task)
    unfreeze = next((c.log for c in trainer.callback_handler.callbacks if hasattr(c, "blocks")), None)
    return trainer, {f"validation_{m}": val, "epochs": history, "best_epoch_metric": trainer.state.best_metric,
                     "imbalance": trainer.imbalance_mode, "stopped_at_epoch": trainer.state.epoch,
                     "unfreeze_schedule": unfreeze}


def _reuse_baseline(ctx, family, data: SplitData, work: Path, key: str, force: bool):
    """The previous run's baseline, when only calibration/QAT settings changed and its files are intact."""
    from edgeft_runtime.fileio import read_json, sha256_file

    prev = ctx.run_dir / NAME
    if force or not (prev / BASELINE_KEY).is_file() or (prev / BASELINE_KEY).read_text() != key:
        return None
    for name in ("baseline/model.safetensors", "baseline_test_logits.npy"):
        a = ctx.manifest.artifact(f"{NAME}/{name}")
        if a is None or not (prev / name).is_file() or sha256_file(prev / name) != a.sha256:
            return None
    shutil.copytree(prev / "baseline", work / "baseline")
    shutil.copy2(prev / "baseline_test_logits.npy", work / "baseline_test_logits.npy")
    (work / BASELINE_KEY).write_text(key)
    ctx.log("finetune: FP32 baseline reused from the previous run (only calibration/QAT settings changed; "
            "--force retrains it)")
    return family.load_saved(work / "baseline", data.labels), read_json(prev / "metrics.json")["baseline"]


def _baseline(ctx, family, data: SplitData, ds: dict, work: Path, force: bool):
    """Fine-tune in FP32 (best validation epoch kept; best search trial kept); save it and its test logits.
    Reuses the previous run's baseline when nothing it depends on changed (see ``baseline_key``)."""
    from edgeft.search import better, trials
    from edgeft.training import best_metric

    bkey = baseline_key(ctx)
    reused = _reuse_baseline(ctx, family, data, work, bkey, force)
    if reused:
        return reused
    cfg = ctx.config
    m, key = headline(data.task), "validation_" + best_metric(cfg.train, data.task)
    best, best_summary, records = None, None, []
    plan = trials(cfg.train, cfg.search, cfg.search_trials, cfg.seed)
    for i, overrides in enumerate(plan):
        train_cfg = cfg.train.model_copy(update=overrides)
        if len(plan) > 1:
            ctx.log(f"finetune: search trial {i + 1}/{len(plan)}: {overrides}")
        trainer, summary = _train_fp32(ctx, train_cfg, family, data, ds, _ckpt_dir(ctx))
        score = summary["best_epoch_metric"] if summary["best_epoch_metric"] is not None else summary[f"validation_{m}"]
        records.append({"trial": i + 1, "params": overrides, key: score, f"validation_{m}": summary[f"validation_{m}"]})
        if best is None or better(score, records[best_summary["trial"] - 1][key], key):
            best, best_summary = trainer, {**summary, "trial": i + 1, "params": overrides}
    if len(plan) > 1:
        ctx.log(f"finetune: best trial {best_summary['trial']}: {best_summary['params']}")
    test, logits = _evaluate(best, ds["test"], data.task)
    ctx.log(f"finetune: FP32 baseline {m} validation {best_summary[f'validation_{m}']:.4f}, test {test:.4f}")
    family.save(best.model, work / "baseline")
    ctx.log(f"finetune: baseline weights digest {weights_digest(best.model)}")
    np.save(work / "baseline_test_logits.npy", logits.astype(np.float32))
    (work / BASELINE_KEY).write_text(bkey)
    return best.model, {**best_summary, f"test_{m}": test, "search": records if len(plan) > 1 else None}


def _quantization_aware(ctx, model, family, data: SplitData, ds: dict, work: Path):
    """Put large embedding tables on the engine's int8 grid, insert INT8 quantizers, calibrate on the
    calibration set, train briefly at a lower lr (QAT)."""
    from edgeft.quant import modelopt_int8

    cfg = ctx.config
    calib = load_calibration(cfg.calibration)
    if cfg.calib_method:
        calib = calib.model_copy(update={"method": cfg.calib_method})
    texts = [e.text for e in getattr(data, calib.split)]

    def calib_batches():
        for chunk in batches(texts, calib):
            yield family.feeds(chunk, calib.max_length)

    teacher = None
    if cfg.train.qat_distill > 0 and cfg.train.qat_epochs > 0:
        import copy

        teacher = copy.deepcopy(model).eval().requires_grad_(False)    # quantize() changes model in place
        ctx.log(f"finetune: QAT distills from the FP32 baseline (weight {cfg.train.qat_distill})")
    error = _fidelity_error(model, family, data, calib)
    snapped = modelopt_int8.snap_embeddings(model)
    if snapped["tables"]:
        ctx.log(f"finetune: embedding tables {snapped['tables']} put on the engine's int8 per-row grid and frozen "
                f"(largest change {snapped['max_abs_change']:.2e})")
    ctx.log(f"finetune: INT8 calibration ({calib.method}) on {min(calib.num_samples, len(texts))} {calib.split} samples")
    auto: dict = {}
    with CONSOLE.progress("calibration auto (evaluations)", None) if calib.method == "auto" \
            else contextlib.nullcontext() as bar:
        qmodel = modelopt_int8.quantize(model, calib_batches, calib.method, calib.percentile,
                                        error=error if calib.method == "auto" else None, report=auto,
                                        progress=lambda done, total, note: bar.update(done, total, note))
    if auto:
        n = min(calib.selection_samples, len(data.validation) or len(data.train))
        ctx.log(f"finetune: calibration auto: logit MSE to FP32 on {n} validation samples: best single method "
                f"{min(auto['single_method_error'].values()):.4f}, per role {auto['role_error']:.4f}, "
                f"per unit {auto['error']:.4f} ({len(auto['refined'])} of {auto['units']} units refined; "
                f"details in {LOG_FILE})")
        CONSOLE.detail("calibration auto, one method for all: "
                       + ", ".join(f"{k} {v:.4f}" for k, v in auto["single_method_error"].items()))
        for role, method in auto["chosen"].items():
            CONSOLE.detail(f"    {role:60s} {method}")
        for u, c in auto["refined"].items():
            CONSOLE.detail(f"    refined {u:60s} {c}")
    epochs = cfg.train.qat_epochs or 1          # with 0 (PTQ only) the trainer is used for evaluation alone
    qat_cfg = cfg.train.model_copy(update={"gradual_unfreeze": False})
    trainer = _trainer(qmodel, family, qat_cfg, cfg.seed, data, ds, _ckpt_dir(ctx), epochs=epochs,
                       lr=cfg.train.lr * cfg.train.qat_lr_scale, evaluate=False, teacher=teacher)
    fidelity = {"calibrated": error(qmodel)}
    if cfg.train.qat_epochs > 0:
        calibrated = {k: v.detach().clone() for k, v in qmodel.state_dict().items()}
        ctx.log(f"finetune: quantization-aware training, {cfg.train.qat_epochs} epoch(s)")
        trainer.train()
        fidelity["qat"] = error(trainer.model)
        fidelity["kept"] = "qat"
        if cfg.train.qat_keep == "closer" and fidelity["qat"] > fidelity["calibrated"]:
            trainer.model.load_state_dict(calibrated)
            fidelity["kept"] = "calibrated"
        ctx.log(f"finetune: output MSE to the FP32 baseline on validation: calibrated {fidelity['calibrated']:.4f}, "
                f"after QAT {fidelity['qat']:.4f}; kept the {fidelity['kept']} weights"
                + (" (QAT moved the model away from the baseline; --qat-keep always keeps them)"
                   if fidelity["kept"] == "calibrated" else ""))
    _drop_checkpoints(trainer, _ckpt_dir(ctx))
    m = headline(data.task)
    val, _ = _evaluate(trainer, ds["validation"], data.task)
    test, _ = _evaluate(trainer, ds["test"], data.task)
    ctx.log(f"finetune: INT8 fake-quant {m} validation {val:.4f}, test {test:.4f}")
    modelopt_int8.save(trainer.model, work / "qat")
    sens = _sensitivity(ctx, trainer, ds, data.task)
    qat = {"mode": "qat" if cfg.train.qat_epochs > 0 else "ptq", "distill": cfg.train.qat_distill if teacher else 0.0,
           f"validation_{m}": val, f"test_{m}": test,
           "quantizers": modelopt_int8.count_quantizers(trainer.model), "int8_embeddings": snapped,
           "fidelity_mse": fidelity, "sensitivity": sens}
    return qat, {**calib.model_dump(), "fingerprint": calib_fingerprint(texts, calib), **({"auto": auto} if auto else {})}


def _fidelity_error(model, family, data: SplitData, calib):
    """For ``--calib-method auto`` and the QAT keep-check: mean squared difference between a model's outputs
    and the FP32 model's (``model`` as it is now) on up to ``calib.selection_samples`` validation examples (never
    test); the inputs are prepared once and reused by every evaluation."""
    import torch

    from edgeft.calibration import select_indices
    from edgeft.training import fp32_forward

    texts = [e.text for e in data.validation] or [e.text for e in data.train]
    pick = [texts[i] for i in select_indices(len(texts), calib.model_copy(update={"num_samples": calib.selection_samples}))]
    feeds = [family.feeds(pick[i:i + calib.batch_size], calib.max_length) for i in range(0, len(pick), calib.batch_size)]

    def outputs(m) -> list:
        fp32_forward(m)                     # a model Trainer trained under bf16 is compared in FP32
        device = next(m.parameters()).device
        was_training = m.training
        m.eval()
        with torch.no_grad():
            out = [m(**{k: v.to(device) for k, v in f.items()}).logits.float().cpu() for f in feeds]
        m.train(was_training)
        return out

    reference = outputs(model)

    def error(m) -> float:
        return float(sum(((a - b) ** 2).sum() for a, b in zip(outputs(m), reference)) / sum(r.numel() for r in reference))
    return error


def _ckpt_dir(ctx) -> Path:
    """Trainer's checkpoints: one folder that every DDP rank sees (rank 0 writes, all load the best)."""
    return ctx.run_dir / f".{NAME}.ckpt"


def _drop_checkpoints(trainer, ckpt: Path) -> None:
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        shutil.rmtree(ckpt, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()


def weights_digest(model) -> str:
    """sha256 over the state dict: equal on every DDP rank when training kept them in sync."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode() + v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _sensitivity(ctx, trainer, ds: dict, task: str) -> list[dict]:
    """Cost of quantizing each block alone, on the validation split; printed as a sorted table."""
    from edgeft.quant.sensitivity import sensitivity

    with CONSOLE.progress("per-block INT8 sensitivity", None) as bar:
        rows = sensitivity(trainer.model, lambda: _evaluate(trainer, ds["validation"], task)[0],
                           lower_is_better=task == "regression",
                           progress=lambda done, total, note: bar.update(done, total, note))
    worst = rows[0] if rows else None
    ctx.log(f"finetune: per-block INT8 sensitivity (validation {headline(task)} cost): "
            + (f"worst {worst['block']} {worst['cost']:+.4f}" if worst else "no blocks") + f"; table in {LOG_FILE}")
    for r in rows:
        CONSOLE.detail(f"    {r['block']:40s} {r['cost']:+.4f}  ({r['quantizers']} quantizers)")
    return rows


def _check_reporting(report_to: str) -> None:
    if report_to == "tensorboard":
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            from edgeft.errors import ConfigError

            raise ConfigError("--report-to tensorboard needs the tensorboard package",
                              fix="pip install 'edgeft[tensorboard]'")


def _log_data(ctx, data: SplitData) -> None:
    r = data.report
    dropped = ", ".join(f"{k}={v}" for k, v in r["dropped"].items()) or "none"
    ctx.log(f"data: {r['counts']} rows; dropped: {dropped}; labels: {data.labels}")
    if "target_stats" in r:
        ctx.log(f"data: regression targets (train) {r['target_stats']['train']} (full report: finetune/data/report.json)")
    else:
        ctx.log(f"data: classes before cleaning {r['class_distribution_before']}, "
                f"train after {r['class_distribution']['train']} (full report: finetune/data/report.json)")
