"""The commands. Every run-like command builds the same RunConfig (see ``--print-config``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgeft import __version__
from edgeft.cli.options import GroupedCommand, build_from_flags, config_options, ignored_by, overrides
from edgeft.config import RunConfig, build_config
from edgeft.distributed import is_main
from edgeft.errors import ConfigError, EdgeftError

EXIT_HELP = ("Exit codes: 0 all gates passed, 1 error, 2 usage error, 3 a gate failed, 4 incomplete: no gate failed "
             "but one could not be measured here (--accept-unmeasured: 0).")


def _set_verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    from edgeft.console import CONSOLE

    CONSOLE.verbose = bool(value)


def control_options(f):
    """Options of every run-like command that are not config fields."""
    f = click.option("--print-config", is_flag=True, help="Print the resolved config as JSON and exit.")(f)
    return click.option("--verbose", is_flag=True, callback=_set_verbose, expose_value=False, is_eager=True,
                        help="Also show library output (Trainer, ModelOpt, transformers) on the console; it "
                             "always goes to RUN_DIR/edgeft.log.")(f)


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
            if ctx.parent is None and ctx.invoked_subcommand in ("run", "finetune", "export", "compile", "verify"):
                click.echo("interrupted: finished stages are kept; re-run the same command to resume", err=True)
            else:
                click.echo("interrupted: nothing half-written was kept", err=True)
            raise click.exceptions.Exit(130) from None


@click.group(cls=EdgeftGroup, context_settings={"max_content_width": 120}, help="edgeft: pretrained model + labeled data -> INT8 edge engines, each verified against "
                  "the model it came from. " + EXIT_HELP)
@click.version_option(__version__, prog_name="edgeft")
def cli() -> None:
    pass


@cli.command(cls=GroupedCommand, help="Fine-tune, quantize (QAT), export, compile and verify, end to end. With no options it "
                  "runs the built-in default (MiniLM on smart-home voice commands). Re-running with the same "
                  "--out skips stages whose inputs did not change. " + EXIT_HELP)
@config_options
@control_options
@click.option("--out", type=click.Path(path_type=Path),
              help="Run directory [default: runs/<model>-<data>, printed at start].")
@click.option("--force", is_flag=True, help="Redo every stage even when it is up to date.")
@click.option("--accept-unmeasured", is_flag=True, help="Exit 0 instead of 4 when no gate failed but some could "
              "not be measured here (latency on a host without the target's ISA, a TensorRT kit built later).")
def run(out: Path | None, force: bool, accept_unmeasured: bool, print_config: bool, **kw: Any) -> None:
    from edgeft.pipeline import RunContext, run_pipeline

    values = overrides(kw)
    if out is not None:
        values["out"] = out
    cfg = _resolve_host_target(build_from_flags(values))
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
    from edgeft.models import model_modality
    from edgeft.targets import resolve_host

    names, why = resolve_host(list(cfg.targets), modality=model_modality(cfg) if "host" in cfg.targets else None)
    if why is not None:
        click.echo(f"target: {why} (--target NAME picks another)", err=True)
    return cfg.model_copy(update={"targets": names})


def _check_targets_and_calibration(cfg: RunConfig) -> None:
    """Fail on an impossible target, a bad calibration set or a model that cannot take the run before any
    training starts (and before the run directory is created)."""
    from edgeft.calibration import load_calibration
    from edgeft.models import check_before_work
    from edgeft.targets import load_target

    for t in cfg.targets:
        load_target(t)
    load_calibration(cfg.calibration)
    check_before_work(cfg)


def _finish(ctx, accept_unmeasured: bool = False) -> None:
    from edgeft.errors import GateFailed, GatesNotMeasured
    from edgeft_runtime.fileio import read_json
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
    @cli.command(name=stage, cls=GroupedCommand, help=doc + " Works on an existing run directory; options "
                 "override the config recorded in its manifest. " + EXIT_HELP)
    @click.argument("run_dir", type=click.Path(path_type=Path))
    @config_options(recorded=True)
    @control_options
    @click.option("--force", is_flag=True, help="Redo the stage even when it is up to date.")
    @click.option("--accept-unmeasured", is_flag=True, help="verify: exit 0 instead of 4 when no gate failed but "
                  "some could not be measured here.")
    def command(run_dir: Path, force: bool, accept_unmeasured: bool, print_config: bool, **kw: Any) -> None:
        from edgeft.errors import RunDirError
        from edgeft.manifest import Manifest
        from edgeft.pipeline import RunContext, run_stage

        ignored = ignored_by(stage, kw)
        if ignored:
            raise ConfigError(f"{', '.join(ignored)}: not read by `edgeft {stage}`, which works from the run's "
                              "recorded choices", fix=f"pass {ignored[0]} to `edgeft finetune {run_dir}` (or "
                              f"`edgeft run --out {run_dir}`), which redoes what it changes; or drop it")
        base = Manifest.load(run_dir).data.get("config") if (run_dir / "manifest.json").is_file() else None
        if base is None and stage != "finetune":
            raise RunDirError(f"{run_dir} is not an edgeft run directory with a finished stage (no recorded config)",
                              fix=f"run `edgeft run --out {run_dir}` or `edgeft finetune {run_dir}` first")
        # only finetune reads the model and data it was given; later stages work from the run's own files
        cfg = _resolve_host_target(build_from_flags({**overrides(kw), "out": run_dir}, base,
                                                    check_paths=stage == "finetune"))
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


def _open_recorded(run_dir: Path):
    """A run context on an existing run directory with the config its manifest recorded (nothing re-read
    from the model or data paths it was given)."""
    from edgeft.errors import RunDirError
    from edgeft.manifest import Manifest
    from edgeft.pipeline import RunContext

    base = Manifest.load(run_dir).data.get("config") if (run_dir / "manifest.json").is_file() else None
    if base is None:
        raise RunDirError(f"{run_dir} is not an edgeft run directory (no manifest.json with a recorded config)",
                          fix="pass the --out folder of a finished `edgeft run`")
    return RunContext.open(build_config({"out": run_dir}, base, check_paths=False))


@cli.command(help="Make one edge bundle per target of a verified run: the engine, its pre-processing and labels, a "
                  "golden set the device checks itself against, the torch-free runtime's wheel (hash-pinned) and "
                  "bundle.json with the sha256 of every file. Writes OUT/<bundle>/ and OUT/<bundle>.tar.gz "
                  "(byte-reproducible). A target whose engine failed a gate is refused unless --allow-failed. "
                  "On the device: `edgeft-runtime check|info|predict|bench BUNDLE`.")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--target", "targets", multiple=True, help="Package only this target (repeatable) [default: every "
              "target of the run].")
@click.option("--out", type=click.Path(path_type=Path), help="Folder for the bundles [default: RUN_DIR/bundles].")
@click.option("--sign-key", type=click.Path(path_type=Path), help="Sign bundle.json with this Ed25519 private key "
              "(PEM; `openssl genpkey -algorithm ed25519 -out key.pem`). Needs `cryptography` (edgeft[sign]).")
@click.option("--docker", is_flag=True, help="Also write the target's Dockerfile into the bundle (it is the build context).")
@click.option("--allow-failed", is_flag=True, help="Package a target whose engine failed a verification gate; the "
              "bundle and every device command say so.")
@click.option("--golden", type=click.IntRange(1, 100000), default=64, show_default=True,
              help="Test-split inputs in the golden set (all of them when the split is smaller).")
@click.option("--with-reference", is_flag=True, help="Also bundle the FP32 reference engine (for `edgeft-runtime "
              "bench` to compare against on the device).")
@click.option("--name", help="Bundle name [default: <run dir name>-<target>].")
@click.option("--version", "version", help="Bundle version [default: 0+<first 12 hex of the run manifest's sha256>].")
def package(run_dir: Path, targets: tuple[str, ...], out: Path | None, sign_key: Path | None, docker: bool,
            allow_failed: bool, golden: int, with_reference: bool, name: str | None, version: str | None) -> None:
    from edgeft.bundling.make import PackageOptions, package_run
    from edgeft.pipeline import log

    if name is not None and not name.strip():
        raise EdgeftError("--name is empty", fix="pass a name of letters, digits, . _ -")
    opts = PackageOptions(targets=targets, out=out, sign_key=sign_key, docker=docker, allow_failed=allow_failed,
                          golden=golden, with_reference=with_reference, name=name, version=version)
    with _open_recorded(run_dir) as ctx:
        made = package_run(ctx, opts, log=log)
    for folder in made:
        click.echo(f"{folder}\n{folder}.tar.gz")


class _BenchGroup(EdgeftGroup):
    """``edgeft bench RUN_DIR|BUNDLE ...`` runs the benchmark; ``edgeft bench compare OLD NEW`` compares two."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@cli.group(cls=_BenchGroup, help="Benchmark engines side by side on this host: `edgeft bench RUN_DIR|BUNDLE [options]` "
                                 "(see `edgeft bench run --help`), and `edgeft bench compare OLD.json NEW.json`.")
def bench() -> None:
    pass


@bench.command(name="run", help="Time the run's engine, its FP32 reference and the peers a user would otherwise pick "
               "(ORT FP32, quantize_dynamic per tensor and per channel, quantize_static, OpenVINO where installed, "
               "PyTorch eager), each in its own process, in interleaved rounds, over a sweep of batch × sequence × "
               "threads; with accuracy per batch size on the test split. A BUNDLE (folder or .tar.gz) benchmarks what "
               "the bundle holds, as `edgeft-runtime bench` does on the device. Writes bench.json (schema_version 1), "
               "bench.md, bench.csv and PNG plots to --out.")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--sweep", multiple=True, metavar="KEY=V1,V2", help="batch=1,8,32 / seq=32,128,384 / threads=1,2,4 "
              "(a grid; repeatable) [default: the target's opt shape, runtime's default threads].")
@click.option("--engines", help="Comma-separated engines [default: all that run here]: edgeft (the target's engine), "
              "edgeft-fp32-reference, ort-fp32, ort-dynamic, ort-dynamic-per-channel, ort-static, openvino-int8, "
              "openvino-fp32, torch-fp32. Only when named, for ONNX Runtime int8 targets: the target's engine rebuilt "
              "in another int8 flavour, edgeft-int8-u8s8, edgeft-int8-u8u8, edgeft-int8-u8s8-7bit, "
              "edgeft-int8-dynamic-post-gelu, edgeft-int8-dynamic-all (docs/usage.md, int8_kernels).")
@click.option("--target", help="Which of the run's targets [default: its first].")
@click.option("--data", type=click.Path(dir_okay=False, path_type=Path), help="CSV/JSONL with `text` (or `image`) and "
              "`label` columns for accuracy per batch size [default: the run's test split].")
@click.option("--no-accuracy", is_flag=True, help="Skip accuracy per batch size.")
@click.option("--rounds", type=click.IntRange(1, 100), default=3, show_default=True)
@click.option("--duration", type=click.FloatRange(0, 600), default=1.0, show_default=True,
              help="Seconds timed per engine × point × round (at least 10 runs).")
@click.option("--warmup", type=click.FloatRange(0, 600), default=0.3, show_default=True, help="Seconds of warm-up each time.")
@click.option("--cv-warn", type=click.FloatRange(0, 10), default=0.05, show_default=True,
              help="Warn when the round p50s of an engine × point vary more than this (coefficient of variation).")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder [default: RUN_DIR/bench; "
              "for a bundle ./bench-<bundle>]: new, empty or a previous bench's (whose outputs are replaced); never "
              "inside the run directory (but its bench/) or the bundle.")
@click.option("--json", "as_json", is_flag=True, help="Print bench.json only.")
def bench_run(source: Path, sweep: tuple[str, ...], engines: str | None, target: str | None, data: Path | None,
              no_accuracy: bool, rounds: int, duration: float, warmup: float, cv_warn: float, out: Path | None,
              as_json: bool) -> None:
    from edgeft.benchmark.run import BenchOptions, bench_bundle, bench_run_dir

    opts = BenchOptions(sweep=list(sweep), engines=[e.strip() for e in engines.split(",") if e.strip()] if engines is not None else None,
                        target=target, data=data, accuracy=not no_accuracy, rounds=rounds, duration=duration,
                        warmup=warmup, cv_warn=cv_warn, out=out, quiet=as_json)
    if not source.exists():
        raise EdgeftError(f"{source}: no such run directory or bundle",
                          fix="pass the --out folder of an `edgeft run`, or a bundle folder or .tar.gz")
    is_bundle = source.is_file() or (source / "bundle.json").is_file()
    if is_bundle:
        doc, folder = bench_bundle(source, opts)
    else:
        with _open_recorded(source) as ctx:
            doc, folder = bench_run_dir(ctx, opts)
    if as_json:
        import json

        click.echo(json.dumps(doc, indent=2))


@bench.command(name="compare", help="Is NEW slower than OLD beyond the noise of both runs? Per engine × point, a 95% "
               "bootstrap interval of the ratio of the median round p50s; regressed when the whole interval is above "
               "1 + threshold (no verdict from a single round). OLD and NEW: bench.json files or the --out folders holding "
               "them. Exit 3 when something regressed, 0 otherwise.")
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--threshold", default="5%", show_default=True, help="Slowdown tolerated beyond noise (5% or 0.05).")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def bench_compare(old: Path, new: Path, threshold: str, as_json: bool) -> None:
    from edgeft.benchmark.run import compare_files

    compare_files(old, new, threshold, as_json)
