"""Trainer set-up shared by the baseline, QAT and search trials: arguments, loss, sampling, callbacks.

Everything here configures transformers ``Trainer`` (no hand-written loop):
- loss: cross-entropy with optional label smoothing and class weights (``imbalance: weights``), or
  oversampling of rare classes (``imbalance: oversample``); ``auto`` picks weights when the largest class
  outnumbers the smallest by more than ``IMBALANCE_RATIO``;
- optimizer AdamW or SGD, warmup + linear/cosine/constant schedule, weight decay, gradient clipping and
  accumulation, bf16/fp16 autocast on CUDA only;
- validation every epoch (accuracy, macro-F1), early stopping on the chosen metric, best epoch kept;
- gradual unfreezing: head first, then one more block from the top per epoch.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
from transformers import TrainerCallback  # this module is imported only by the finetune stage

IMBALANCE_RATIO = 3.0


def best_metric(train_cfg, task: str) -> str:
    if train_cfg.best_metric != "auto":
        return train_cfg.best_metric
    return "rmse" if task == "regression" else "accuracy"


def regression_metrics(eval_pred) -> dict[str, float]:
    preds, targets = eval_pred
    err = np.asarray(preds, dtype=np.float64).reshape(-1) - np.asarray(targets, dtype=np.float64).reshape(-1)
    return {"mse": float(np.mean(err ** 2)), "rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err)))}


def metrics(eval_pred) -> dict[str, float]:
    logits, labels = eval_pred
    pred = np.argmax(logits, -1)
    f1s = []
    for c in np.unique(np.concatenate([labels, pred])):
        tp = np.sum((pred == c) & (labels == c))
        denom = np.sum(pred == c) + np.sum(labels == c)
        f1s.append(2 * tp / denom if denom else 0.0)
    return {"accuracy": float((pred == labels).mean()), "macro_f1": float(np.mean(f1s))}


def imbalance_mode(train_cfg, label_ids: Sequence[int]) -> str:
    if train_cfg.imbalance != "auto":
        return train_cfg.imbalance
    counts = Counter(label_ids)
    return "weights" if max(counts.values()) > IMBALANCE_RATIO * min(counts.values()) else "none"


def class_weights(label_ids: Sequence[int], n_classes: int) -> list[float]:
    """Inverse-frequency weights, normalized so that the average example weighs 1."""
    counts = np.bincount(np.asarray(label_ids), minlength=n_classes).astype(float)
    w = len(label_ids) / (n_classes * np.maximum(counts, 1))
    return w.tolist()


def training_args(train_cfg, seed: int, out: Path, *, epochs: float, lr: float, evaluate: bool,
                  task: str = "classification"):
    import torch
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    precision = train_cfg.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    return TrainingArguments(
        output_dir=str(out), num_train_epochs=epochs, learning_rate=lr, max_steps=train_cfg.max_steps,
        per_device_train_batch_size=train_cfg.batch_size, per_device_eval_batch_size=64,
        gradient_accumulation_steps=train_cfg.grad_accum, max_grad_norm=train_cfg.max_grad_norm,
        optim="sgd" if train_cfg.optimizer == "sgd" else "adamw_torch", lr_scheduler_type=train_cfg.scheduler,
        weight_decay=train_cfg.weight_decay, warmup_ratio=train_cfg.warmup_ratio, seed=seed,
        bf16=precision == "bf16" and cuda, fp16=precision == "fp16" and cuda,
        eval_strategy="epoch" if evaluate else "no", save_strategy="epoch" if evaluate else "no",
        save_total_limit=1, load_best_model_at_end=evaluate, metric_for_best_model=best_metric(train_cfg, task),
        greater_is_better=best_metric(train_cfg, task) in ("accuracy", "macro_f1"), logging_strategy="epoch",
        report_to=["tensorboard"] if train_cfg.report_to == "tensorboard" else [],
        logging_dir=str(out.parent / "tensorboard") if train_cfg.report_to == "tensorboard" else None,
        use_cpu=not cuda, dataloader_num_workers=0, save_safetensors=True, disable_tqdm=True)


def fp32_forward(model):
    """Take the mixed-precision wrapper that Trainer (through accelerate) puts on ``model.forward`` under
    bf16/fp16 training back off, so the model computes in FP32 again; a no-op without one. Returns the model."""
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model, keep_fp32_wrapper=False)


def predict_fp32(trainer, ds):
    """``trainer.predict`` in FP32: under bf16/fp16 training Trainer wraps the model's forward in autocast
    (through accelerate on CUDA, its own CPU AMP otherwise); the wrapper is taken off and CPU AMP paused."""
    fp32_forward(trainer.model)
    cpu_amp, trainer.use_cpu_amp = trainer.use_cpu_amp, False
    try:
        return trainer.predict(ds)
    finally:
        trainer.use_cpu_amp = cpu_amp


def target_scale(label_ids: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(label_ids, dtype=np.float64)
    return float(v.mean()), float(v.std()) or 1.0


def init_regression_head(model, label_ids: Sequence[float]) -> None:
    """Start the output at the targets' mean with their spread, so training behaves as on standardized
    targets (a head that starts at 0 against targets far from 0 collapses to a constant)."""
    import torch

    mean, std = target_scale(label_ids)
    head = [m for name, m in model.named_modules() if name.split(".")[-1] in ("classifier", "score", "fc", "head")]
    linears = [m for h in head for m in ([h] if isinstance(h, torch.nn.Linear) else h.modules())
               if isinstance(m, torch.nn.Linear) and m.out_features == 1]
    if not linears:
        raise ValueError("no single-output head found to initialize for regression")
    with torch.no_grad():
        linears[-1].weight.mul_(std)
        linears[-1].bias.fill_(mean)


DISTILL_TEMPERATURE = 2.0


def distillation_loss(student, teacher, regression: bool, scale: float = 1.0):
    """KL(teacher || student) on temperature-softened logits, times T^2 (Hinton et al.); regression:
    MSE to the teacher's output in units of the targets' variance."""
    import torch.nn.functional as F

    if regression:
        return F.mse_loss(student.view(-1).float(), teacher.view(-1).float()) / scale
    t = DISTILL_TEMPERATURE
    return F.kl_div(F.log_softmax(student.float() / t, -1), F.log_softmax(teacher.float() / t, -1),
                    reduction="batchmean", log_target=True) * t * t


def make_trainer(model, args, train_ds, eval_ds, collator, train_cfg, label_ids: Sequence, n_classes: int,
                 task: str = "classification", teacher=None, distill: float = 0.0):
    """A Trainer with the loss/sampling the config asks for, early stopping and gradual unfreezing.

    Classification: cross-entropy (label smoothing, class weights). Regression: MSE on the single output,
    divided by the targets' variance. With a ``teacher`` and ``distill`` > 0 (QAT from the FP32 baseline),
    training minimizes ``(1 - distill) * task loss + distill * distillation_loss``.
    """
    import torch
    from transformers import EarlyStoppingCallback, Trainer

    regression = task == "regression"
    mode = "none" if regression else imbalance_mode(train_cfg, label_ids)
    scale = target_scale(label_ids)[1] ** 2 if regression else 1.0
    weights = torch.tensor(class_weights(label_ids, n_classes)) if mode == "weights" else None

    class EdgeftTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            if regression:
                # MSE in units of the targets' variance: the same steps as training on standardized targets
                loss = torch.nn.functional.mse_loss(outputs.logits.view(-1).float(), labels.view(-1).float()) / scale
            else:
                w = weights.to(outputs.logits.device, outputs.logits.dtype) if weights is not None else None
                loss = torch.nn.functional.cross_entropy(outputs.logits.view(-1, n_classes), labels.view(-1),
                                                         weight=w, label_smoothing=train_cfg.label_smoothing)
            if teacher is not None and distill > 0 and model.training:
                teacher.to(outputs.logits.device)
                with torch.no_grad():
                    target = teacher(**inputs).logits
                loss = (1 - distill) * loss + distill * distillation_loss(outputs.logits, target, regression, scale)
            return (loss, outputs) if return_outputs else loss

        def _get_train_sampler(self, train_dataset=None):
            if mode != "oversample":
                return super()._get_train_sampler(train_dataset)
            per_example = torch.tensor(class_weights(label_ids, n_classes))[torch.tensor(list(label_ids))]
            g = torch.Generator().manual_seed(self.args.seed)
            return torch.utils.data.WeightedRandomSampler(per_example, len(label_ids), replacement=True, generator=g)

    callbacks = []
    if args.load_best_model_at_end and train_cfg.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=train_cfg.early_stopping_patience))
    if args.eval_strategy != "no" and train_cfg.gradual_unfreeze:
        callbacks.append(GradualUnfreeze(model))
    callbacks.append(ConsoleProgress())
    trainer = EdgeftTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                            data_collator=collator, compute_metrics=regression_metrics if regression else metrics,
                            callbacks=callbacks)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for raw in (PrinterCallback, ProgressCallback):      # their dict prints and tqdm bars: ConsoleProgress instead
        trainer.remove_callback(raw)
    trainer.model_accepts_loss_kwargs = False
    trainer.imbalance_mode = mode
    return trainer


def transformer_blocks(model) -> list:
    """The repeated blocks of the backbone (the largest ModuleList), bottom first."""
    import torch

    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []


class ConsoleProgress(TrainerCallback):
    """Training on edgeft's console: a progress bar with ETA over the optimizer steps, one line per
    evaluation; Trainer's log dicts go to the run's log file."""

    def __init__(self) -> None:
        self._bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        from edgeft.console import CONSOLE

        if state.is_world_process_zero:
            self._bar = CONSOLE.bar(f"training, {args.num_train_epochs:g} epoch(s)", state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        if self._bar is not None:
            self._bar.update(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        from edgeft.console import CONSOLE

        if state.is_world_process_zero and logs:
            CONSOLE.detail(f"trainer: step {state.global_step}: {logs}")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        from edgeft.console import CONSOLE

        if state.is_world_process_zero and metrics:
            shown = ", ".join(f"{k[5:]} {v:.4f}" for k, v in metrics.items()
                              if k.startswith("eval_") and k[5:] in ("loss", "accuracy", "macro_f1", "rmse"))
            CONSOLE.line(f"    epoch {state.epoch:.0f}: validation {shown}")

    def on_train_end(self, args, state, control, **kwargs):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class GradualUnfreeze(TrainerCallback):
    """Epoch 1 trains the head only; each later epoch unfreezes one more block from the top;
    the embeddings and everything else thaw once every block is trainable."""

    def __init__(self, model):
        self.model = model
        self.blocks = transformer_blocks(model)
        self.block_params = {id(p) for b in self.blocks for p in b.parameters()}
        self.log: list[dict] = []

    def _head_params(self):
        head = [m for name, m in self.model.named_children() if name in ("classifier", "score", "fc", "head")]
        return {id(p) for m in head for p in m.parameters()}

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = int(round(state.epoch or 0))
        n_open = min(epoch, len(self.blocks))
        trainable = self._head_params()
        for b in self.blocks[len(self.blocks) - n_open:]:
            trainable |= {id(p) for p in b.parameters()}
        everything = n_open == len(self.blocks) and epoch > len(self.blocks)
        for p in self.model.parameters():
            p.requires_grad = everything or id(p) in trainable
        self.log.append({"epoch": epoch + 1, "blocks_trainable": n_open, "all_trainable": everything})
