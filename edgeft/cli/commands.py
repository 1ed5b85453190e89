"""The commands. Every run-like command builds the same RunConfig (see ``--print-config``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgeft import __version__
from edgeft.config import BUILTIN_MODEL, RunConfig, build_config
from edgeft.distributed import is_main
from edgeft.errors import EdgeftError

EXIT_HELP = ("Exit codes: 0 all gates passed, 1 error, 2 usage error, 3 a gate failed, 4 incomplete: no gate failed "
             "but one could not be measured here (--accept-unmeasured: 0).")


def _set_verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    from edgeft.console import CONSOLE

    CONSOLE.verbose = bool(value)


def config_options(f):
    """Options that map onto RunConfig fields; only those given override the base config."""
    opts = [
        click.option("--model", help="A local Hugging Face model folder (text or vision), torchvision:ARCH "
                     "(resnet18, resnet50, mobilenet_v3_small, mobilenet_v3_large, efficientnet_b0) or "
                     f"hf-config:TYPE (resnet, mobilenet_v2, vit; random init) [default: {BUILTIN_MODEL}]."),
        click.option("--data", help="Labeled data: CSV, TSV, JSONL, parquet, a datasets save_to_disk folder, hf:NAME, "
                     "or an image folder (DIR/<class>/<image>) [default: built-in smart-home intents]."),
        click.option("--eval-data", help="Separate test file (same columns); otherwise a stratified split."),
        click.option("--text-column", help="Column holding the text [default: text]."),
        click.option("--label-column", help="Column holding the label, string or integer [default: label]."),
        click.option("--task", type=click.Choice(["classification", "regression"]),
                     help="regression: numeric labels, one output trained with MSE, judged by RMSE [default: classification]."),
        click.option("--weights", help="torchvision models: local .pth/.safetensors weights [default: random init]."),
        click.option("--image-column", help="Column of image paths for image data in a table [default: image]."),
        click.option("--modality", type=click.Choice(["auto", "text", "image"]),
                     help="Data kind; auto = image for image folders or tables with an image column [default: auto]."),
        click.option("--bad-images", type=click.Choice(["stop", "skip"]),
                     help="An image that cannot be decoded stops the run or is skipped and counted [default: stop]."),
        click.option("--image-size", type=int, help="Square model input side for images [default: 224]."),
        click.option("--augment/--no-augment", default=None, help="Training-time image augmentation [default: on]."),
        click.option("--hflip/--no-hflip", default=None, help="Random horizontal flip in augmentation [default: on]."),
        click.option("--crop-scale", type=float, help="Smallest area share kept by the random resized crop [default: 0.7]."),
        click.option("--color-jitter", type=float, help="Brightness/contrast/saturation jitter, 0 = off [default: 0.2]."),
        click.option("--target", "targets", multiple=True,
                     help="Target name from targets/ or a YAML path; repeatable. host = the shipped target for this "
                          "CPU (AVX512-VNNI/AMX: x86-avx512-int8, AVX2: x86-avx2-int8, ARM64: arm64-int8) [default: host]."),
        click.option("--epochs", type=float, help="Epochs of FP32 fine-tuning [default: 8]."),
        click.option("--qat-epochs", type=float, help="Epochs of quantization-aware training; 0 = PTQ only [default: 1]."),
        click.option("--qat-distill", type=float,
                     help="QAT: weight (0-1) of distillation from the FP32 baseline in the loss [default: 0]."),
        click.option("--qat-keep", type=click.Choice(["closer", "always"]),
                     help="closer: keep QAT's weights only if they bring the INT8 model closer to the FP32 baseline on "
                          "validation than calibration alone; always: keep them [default: closer]."),
        click.option("--batch-size", type=int, help="Training batch size [default: 16]."),
        click.option("--lr", type=float, help="Learning rate [default: 1e-4]."),
        click.option("--max-length", type=int, help="Max tokens per input [default: 128]."),
        click.option("--max-steps", type=int, help="Cap optimizer steps per phase (smoke runs)."),
        click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), help="Optimizer [default: adamw]."),
        click.option("--scheduler", type=click.Choice(["linear", "cosine", "constant_with_warmup"]),
                     help="Learning-rate schedule after warmup [default: linear]."),
        click.option("--warmup-ratio", type=float, help="Share of steps spent warming up [default: 0.1]."),
        click.option("--weight-decay", type=float, help="Weight decay [default: 0.01]."),
        click.option("--dropout", type=float, help="Override the model's dropout probabilities."),
        click.option("--max-grad-norm", type=float, help="Gradient clipping norm [default: 1.0]."),
        click.option("--grad-accum", type=int, help="Gradient accumulation steps [default: 1]."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
                     help="Autocast on CUDA (CPU always trains in fp32) [default: auto]."),
        click.option("--label-smoothing", type=float, help="Cross-entropy label smoothing [default: 0]."),
        click.option("--imbalance", type=click.Choice(["auto", "none", "weights", "oversample"]),
                     help="Class-weighted loss or oversampling; auto = weights when classes differ > 3x [default: auto]."),
        click.option("--best-metric", type=click.Choice(["auto", "accuracy", "macro_f1", "rmse", "loss"]),
                     help="Validation metric that picks the kept epoch and drives early stopping; auto = accuracy, "
                          "or rmse for regression [default: auto]."),
        click.option("--early-stopping", "early_stopping_patience", type=int,
                     help="Stop after this many epochs without improvement (patience)."),
        click.option("--gradual-unfreeze/--no-gradual-unfreeze", default=None,
                     help="Train the head first, then one more block per epoch."),
        click.option("--search", "search", multiple=True,
                     help="Hyper-parameter grid, repeatable: --search lr=1e-5,5e-5 --search batch_size=16,32 "
                          "(lr, batch_size, epochs, weight_decay); the best by validation goes on."),
        click.option("--search-trials", type=int, help="Train this many random points of the --search grid."),
        click.option("--report-to", type=click.Choice(["none", "tensorboard"]),
                     help="Log training curves to TensorBoard (RUN_DIR/tensorboard/) [default: none]."),
        click.option("--calibration", help="Calibration set: name in calibration/ or a YAML path [default: default]."),
        click.option("--calib-method", type=click.Choice(["max", "entropy", "percentile", "mse", "auto"]),
                     help="Activation calibration for this run (overrides the calibration set's method)."),
        click.option("--quant", type=click.Choice(["qat", "ptq"]),
                     help="qat: calibrate then train with fake-quant (--qat-epochs, 1 unless given); ptq: calibrate only "
                          "(= --qat-epochs 0) [default: qat]."),
        click.option("--keep-fp32", "keep_fp32", multiple=True,
                     help="A block (from the sensitivity table, e.g. bert.encoder.layer.3) or one layer (its "
                          "module path, e.g. bert.encoder.layer.3.output.dense) to leave unquantized; repeatable."),
        click.option("--fallback", type=int,
                     help="When an accuracy gate fails, keep up to N of the most sensitive blocks in FP32 and "
                          "rebuild until it passes [default: 0 = off]."),
        click.option("--fallback-minutes", type=float, help="Time budget for the fallback's rebuild rounds."),
        click.option("--seed", type=int, help="Random seed [default: 0]."),
        click.option("--print-config", is_flag=True, help="Print the resolved config as JSON and exit."),
        click.option("--verbose", is_flag=True, callback=_set_verbose, expose_value=False, is_eager=True,
                     help="Also show library output (Trainer, ModelOpt, transformers) on the console; it always "
                          "goes to RUN_DIR/edgeft.log."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


VISION_KEYS = {"image_size", "augment", "hflip", "crop_scale", "color_jitter"}
TRAIN_KEYS = {"epochs", "qat_epochs", "qat_distill", "qat_keep", "batch_size", "lr", "max_length", "max_steps", "optimizer", "scheduler",
              "warmup_ratio", "weight_decay", "dropout", "max_grad_norm", "grad_accum", "precision",
              "label_smoothing", "imbalance", "best_metric", "early_stopping_patience", "gradual_unfreeze",
              "report_to"}


def overrides(kw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    quant = kw.pop("quant", None)
    if quant == "ptq":
        if kw.get("qat_epochs"):
            raise click.BadParameter("--quant ptq trains no QAT epochs; drop --qat-epochs", param_hint="--quant")
        kw["qat_epochs"] = 0.0
    elif quant == "qat":
        if kw.get("qat_epochs") == 0:
            raise click.BadParameter("--quant qat needs QAT epochs; drop --qat-epochs 0", param_hint="--quant")
        if kw.get("qat_epochs") is None:            # a run recorded with --quant ptq gets QAT back
            from edgeft.config import TrainConfig

            kw["qat_epochs"] = TrainConfig.model_fields["qat_epochs"].default
    for key, value in kw.items():
        if value is None or value == () or key == "print_config":
            continue
        if key in TRAIN_KEYS:
            out.setdefault("train", {})[key] = value
        elif key in VISION_KEYS:
            out.setdefault("vision", {})[key] = value
        elif key == "search":
            from edgeft.search import parse

            try:
                out["search"] = parse(list(value))
            except ValueError as e:
                raise click.BadParameter(str(e), param_hint="--search") from None
        else:
            out[key] = list(value) if key in ("targets", "keep_fp32") else value
    return out


def _maybe_print(cfg: RunConfig, print_config: bool) -> bool:
    if print_config:
        click.echo(cfg.model_dump_json(indent=2))
    return print_config


class EdgeftGroup(click.Group):
    """Turns domain errors into one clear message and their exit code (no traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgeftError as e:
            click.echo(f"error: {e.message}", err=True)
            if e.fix:
                click.echo(f"  fix: {e.fix}", err=True)
            raise click.exceptions.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            click.echo("interrupted: finished stages are kept; re-run the same command to resume", err=True)
            raise click.exceptions.Exit(130) from None


@click.group(cls=EdgeftGroup, help="edgeft: pretrained model + labeled data -> INT8 edge engines, each verified against "
                  "the model it came from. " + EXIT_HELP)
@click.version_option(__version__, prog_name="edgeft")
def cli() -> None:
    pass


@cli.command(help="Fine-tune, quantize (QAT), export, compile and verify, end to end. With no options it "
                  "runs the built-in default (MiniLM on smart-home voice commands). Re-running with the same "
                  "--out skips stages whose inputs did not change. " + EXIT_HELP)
@config_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Run directory [default: runs/<model>-<data>, printed at start].")
@click.option("--force", is_flag=True, help="Redo every stage even when it is up to date.")
@click.option("--accept-unmeasured", is_flag=True, help="Exit 0 instead of 4 when no gate failed but some could "
              "not be measured here (latency on a host without the target's ISA, a TensorRT kit built later).")
def run(out: Path | None, force: bool, accept_unmeasured: bool, print_config: bool, **kw: Any) -> None:
    from edgeft.pipeline import RunContext, run_pipeline

    values = overrides(kw)
    if out is not None:
        values["out"] = out
    cfg = _resolve_host_target(build_config(values))
    if _maybe_print(cfg, print_config):
        return
    _check_targets_and_calibration(cfg)
    click.echo(f"run directory: {Path(cfg.out).resolve()}", err=True)
    ctx = RunContext.open(cfg)
    try:
        run_pipeline(ctx, force=force)
        if is_main():
            _finish(ctx, accept_unmeasured)
    finally:
        ctx.close()


def _resolve_host_target(cfg: RunConfig) -> RunConfig:
    """``--target host`` (the default) becomes this CPU's shipped target, said once on the console; the
    manifest records the concrete name, so a run directory means the same thing on any later host."""
    from edgeft.targets import resolve_host

    names, why = resolve_host(list(cfg.targets))
    if why is None:
        return cfg
    click.echo(f"target: {why} (--target NAME picks another)", err=True)
    return cfg.model_copy(update={"targets": names})


def _check_targets_and_calibration(cfg: RunConfig) -> None:
    """Fail on an impossible target or a bad calibration set before any training starts (and before the
    run directory is created)."""
    from edgeft.calibration import load_calibration
    from edgeft.targets import load_target

    for t in cfg.targets:
        load_target(t)
    load_calibration(cfg.calibration)


def _finish(ctx, accept_unmeasured: bool = False) -> None:
    from edgeft.errors import GateFailed, GatesNotMeasured
    from edgeft.fileio import read_json
    from edgeft.pipeline import publish_reports
    from edgeft.report import verdict_of

    report_path = ctx.require("verify.report_json")
    publish_reports(ctx)
    click.echo(ctx.path("report.md").read_text(encoding="utf-8"))
    click.echo(f"report: {ctx.path('report.md')}  (machine-readable: {ctx.path('report.json')})", err=True)
    report = read_json(report_path)
    verdict = verdict_of(report)
    if verdict == "failed":
        failed = [f"{e['target']}: {g['name']} = {g['value']:.4g} (needs {g['op']} {g['threshold']})"
                  for e in report["engines"] for g in e["gates"] if g["passed"] is False]
        raise GateFailed("gate(s) failed:\n  - " + "\n  - ".join(failed),
                         fix="see report.md; loosen the gate in the target YAML only if the loss is acceptable")
    if verdict == "incomplete":
        missing = [f"{e['target']}: {g['name']} ({g.get('not_measured', 'not measured here')})"
                   for e in report["engines"] for g in e["gates"] if g["passed"] is None]
        message = "incomplete: no gate failed, but these were not measured here:\n  - " + "\n  - ".join(missing)
        if accept_unmeasured:
            click.echo(message + "\n(accepted: --accept-unmeasured)", err=True)
            return
        raise GatesNotMeasured(message, fix="measure them on the target device (`edgeft verify RUN_DIR` there), or "
                                            "pass --accept-unmeasured to accept the engine without them")


def _stage_command(stage: str, doc: str):
    @cli.command(name=stage, help=doc + " Works on an existing run directory; options override the config "
                                        "recorded in its manifest. " + EXIT_HELP)
    @click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
    @config_options
    @click.option("--force", is_flag=True, help="Redo the stage even when it is up to date.")
    @click.option("--accept-unmeasured", is_flag=True, help="verify: exit 0 instead of 4 when no gate failed but "
                  "some could not be measured here.")
    def command(run_dir: Path, force: bool, accept_unmeasured: bool, print_config: bool, **kw: Any) -> None:
        from edgeft.fileio import read_json
        from edgeft.pipeline import RunContext, run_stage

        manifest = run_dir / "manifest.json"
        base = RunConfig.model_validate(read_json(manifest)["config"]) if manifest.is_file() else None
        if base is None and stage != "finetune":
            from edgeft.errors import RunDirError
            raise RunDirError(f"{run_dir} is not an edgeft run directory (no manifest.json)",
                              fix=f"run `edgeft run --out {run_dir}` or `edgeft finetune {run_dir}` first")
        cfg = _resolve_host_target(build_config({**overrides(kw), "out": run_dir}, base))
        if _maybe_print(cfg, print_config):
            return
        _check_targets_and_calibration(cfg)
        ctx = RunContext.open(cfg)
        try:
            run_stage(ctx, stage, force=force)
            if stage == "verify" and is_main():
                _finish(ctx, accept_unmeasured)
        finally:
            ctx.close()

    return command


_stage_command("finetune", "Fine-tune the FP32 baseline, then INT8 quantization-aware training (ModelOpt).")
_stage_command("export", "Export the baseline and the QAT model to ONNX (optimum-onnx), with a parity check.")
_stage_command("compile", "Build an engine per target (and an FP32 reference engine).")
_stage_command("verify", "Measure accuracy, agreement and latency of every engine; apply the gates.")


@cli.group(cls=EdgeftGroup, help="List, show and validate target YAMLs (targets/).")
def targets() -> None:
    pass


def _shipped_targets(names: list[str]) -> list[str]:
    """No shipped target found is a broken install, not an empty list."""
    from edgeft.errors import TargetError
    from edgeft.targets import targets_dir

    if not names:
        raise TargetError(f"no target YAMLs found in {targets_dir()}",
                          fix="reinstall edgeft (`pip install --force-reinstall edgeft`), or set EDGEFT_TARGETS_DIR "
                              "to a folder of target YAMLs")
    return names


@targets.command(name="ls", help="List the shipped targets.")
def targets_ls() -> None:
    from edgeft.targets import list_targets, load_target

    for name in _shipped_targets(list_targets()):
        spec = load_target(name)
        click.echo(f"{name:28s} {spec.backend:16s} {spec.precision:5s} {spec.description}")


@targets.command(name="show", help="Print a target YAML.")
@click.argument("name")
def targets_show(name: str) -> None:
    from edgeft.targets import resolve_target_path

    click.echo(resolve_target_path(name).read_text(encoding="utf-8"), nl=False)


@targets.command(name="validate", help="Validate targets against the schema and their backend's capabilities "
                                       "(all shipped targets when none is named).")
@click.argument("names", nargs=-1)
def targets_validate(names: tuple[str, ...]) -> None:
    from edgeft.errors import EdgeftError, TargetError
    from edgeft.targets import list_targets, load_target

    bad = 0
    for name in names or _shipped_targets(list_targets()):
        try:
            spec = load_target(name)
            click.echo(f"✓ {name}: {spec.backend}, {spec.precision}, {spec.device.kind}/{spec.device.isa}")
        except EdgeftError as e:
            bad += 1
            click.echo(f"✗ {name}: {e}", err=True)
    if bad:
        raise TargetError(f"{bad} target(s) invalid", fix="edit the files named above")
