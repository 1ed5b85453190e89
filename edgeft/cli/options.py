"""Command-line options made from RunConfig's fields: the config holds each name's type, default, choices
and help once; this module only says which fields get a flag, under which heading, and the few flags
whose name differs from the field's. ``edgeft run --help`` lists them under those headings."""
from __future__ import annotations

import types
import typing
from typing import Any, Literal

import click

from edgeft.config import RunConfig, Strict

# heading -> config fields (dotted paths), in the order --help shows them
GROUPS: dict[str, list[str]] = {
    "Model and data": ["model", "weights", "data", "eval_data", "text_column", "label_column", "image_column",
                       "task", "modality", "bad_images"],
    "Training": ["train.epochs", "train.lr", "train.batch_size", "train.max_length", "train.max_steps",
                 "train.optimizer", "train.scheduler", "train.warmup_ratio", "train.weight_decay", "train.dropout",
                 "train.max_grad_norm", "train.grad_accum", "train.precision", "train.label_smoothing",
                 "train.imbalance", "train.best_metric", "train.early_stopping_patience", "train.gradual_unfreeze",
                 "search", "search_trials", "train.report_to", "seed"],
    "Images": ["vision.image_size", "vision.augment", "vision.hflip", "vision.crop_scale", "vision.color_jitter"],
    "Quantization": ["train.qat_epochs", "train.qat_distill", "train.qat_keep", "calibration", "calib_method",
                     "keep_fp32", "fallback", "fallback_minutes"],
    "Targets": ["targets"],
}
# fields set in YAML or by edgeft itself, not by a flag
NO_FLAG = {"out", "train", "vision", "split", "vision.mean", "vision.std", "train.qat_lr_scale",
           "split.validation_fraction", "split.test_fraction"}
FLAG_NAMES = {"targets": "--target", "train.early_stopping_patience": "--early-stopping"}
PARAM = "__"          # a flag's Python name is its field path with "." -> "__" (train__lr)


def _field(path: str):
    model, info = RunConfig, None
    for part in path.split("."):
        info = model.model_fields[part]
        model = info.annotation
    return info


def _unwrap_optional(tp):
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _default_text(info) -> str:
    default = info.get_default(call_default_factory=True)
    if default is None or default == [] or default == {}:
        return ""
    if isinstance(default, bool):
        return " [default: on]" if default else " [default: off]"
    if isinstance(default, list):
        return f" [default: {', '.join(map(str, default))}]"
    return f" [default: {default}]"


def flag_of(path: str) -> str:
    """The command-line flag that sets config field ``path``."""
    return FLAG_NAMES.get(path, "--" + path.split(".")[-1].replace("_", "-"))


def build_from_flags(values: dict[str, Any], base=None, check_paths: bool = True):
    """``build_config`` for a command line: its problems name the flags the user typed (``--epochs``), not only
    the config fields behind them (``train.epochs``)."""
    import re

    from edgeft.config import build_config
    from edgeft.errors import ConfigError

    try:
        return build_config(values, base, check_paths=check_paths)
    except ConfigError as e:
        flagged = fields_with_flags()

        def name(m: re.Match) -> str:
            path = m.group(1)
            return f"  - {flag_of(path)} ({path}):" if path in flagged else m.group(0)

        message = re.sub(r"^  - ([\w.]+):", name, e.message, flags=re.M)
        raise ConfigError(message, fix="correct the options above (`--help` lists each with its range)") from None


def make_option(path: str, group: str, recorded: bool = False) -> click.Option:
    info = _field(path)
    tp = _unwrap_optional(info.annotation)
    leaf = path.split(".")[-1]
    flag = flag_of(path)
    help_text = (info.description or leaf.replace("_", " ")).rstrip(".")
    help_text = help_text[0].upper() + help_text[1:] + "." + (" [default: as recorded in the run]" if recorded
                                                              else _default_text(info))
    name = path.replace(".", PARAM)
    kw: dict[str, Any] = {"help": help_text}
    if tp is bool:
        decls = [f"{flag}/--no-{flag[2:]}", name]
        kw["default"] = None
    else:
        decls = [flag, name]
        if typing.get_origin(tp) is Literal:
            kw["type"] = click.Choice([str(c) for c in typing.get_args(tp)])
        elif typing.get_origin(tp) in (list, dict):
            kw["multiple"] = True
        elif tp in (int, float):
            kw["type"] = tp
    option = click.Option(decls, **kw)
    option.group = group
    return option


def config_options(f=None, *, recorded: bool = False):
    """Decorate a command with a flag for every config field in GROUPS; only flags given override the config.
    ``recorded``: a stage command, whose defaults are the run's recorded config."""
    if f is None:
        return lambda g: config_options(g, recorded=recorded)
    params = [make_option(path, group, recorded) for group, paths in GROUPS.items() for path in paths]
    quant = click.Option(["--quant"], type=click.Choice(["qat", "ptq"]),
                         help="qat: calibrate then train with fake-quant (--qat-epochs, 1 unless given); "
                              "ptq: calibrate only (= --qat-epochs 0). "
                              + ("[default: as recorded in the run]" if recorded else "[default: qat]"))
    quant.group = "Quantization"
    params.append(quant)
    if not hasattr(f, "__click_params__"):
        f.__click_params__ = []
    f.__click_params__.extend(reversed(params))      # click lists decorator params in reverse
    return f


# what a stage command other than finetune reads from the flags; the rest is finetune's, recorded in the run
STAGE_FIELDS = {"export": {"keep_fp32", "targets"}, "compile": {"targets"}, "verify": {"targets"}}


def ignored_by(stage: str, kw: dict[str, Any]) -> list[str]:
    """The flags given to ``stage`` that it does not read (they belong to finetune or another stage)."""
    if stage not in STAGE_FIELDS:
        return []
    given = [name.replace(PARAM, ".") for name, value in kw.items() if value is not None and value != ()]
    flagged = fields_with_flags() | {"quant"}
    return [flag_of(p) for p in given if p in flagged and p not in STAGE_FIELDS[stage]]


def overrides(kw: dict[str, Any]) -> dict[str, Any]:
    """Nested config values from the flags that were given (None / empty = not given)."""
    kw = dict(kw)
    quant, qat = kw.pop("quant", None), "train" + PARAM + "qat_epochs"
    if quant == "ptq":
        if kw.get(qat):
            raise click.BadParameter("--quant ptq trains no QAT epochs; drop --qat-epochs", param_hint="--quant")
        kw[qat] = 0.0
    elif quant == "qat":
        if kw.get(qat) == 0:
            raise click.BadParameter("--quant qat needs QAT epochs; drop --qat-epochs 0", param_hint="--quant")
        if kw.get(qat) is None:            # a run recorded with --quant ptq gets QAT back
            kw[qat] = _field("train.qat_epochs").default
    out: dict[str, Any] = {}
    for name, value in kw.items():
        if PARAM not in name and name not in RunConfig.model_fields:
            continue
        if value is None or value == ():
            continue
        path = name.split(PARAM)
        if path == ["search"]:
            from edgeft.search import parse

            try:
                value = parse(list(value))
            except ValueError as e:
                raise click.BadParameter(str(e), param_hint="--search") from None
        elif isinstance(value, tuple):
            value = list(value)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


class GroupedCommand(click.Command):
    """--help lists options under their headings (``option.group``), the rest under "Output and control"."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record:
                sections.setdefault(getattr(param, "group", "Output and control"), []).append(record)
        for title in [*GROUPS, "Output and control"]:
            if title in sections:
                with formatter.section(title):
                    formatter.write_dl(sections[title])


def fields_with_flags() -> set[str]:
    return {p for paths in GROUPS.values() for p in paths}


def leaf_fields(model=RunConfig, prefix: str = "") -> set[str]:
    """Every field path of the config that is not itself a config section."""
    out = set()
    for name, info in model.model_fields.items():
        path = prefix + name
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, Strict):          # a config section
            out |= leaf_fields(sub, path + ".")
        else:
            out.add(path)
    return out
