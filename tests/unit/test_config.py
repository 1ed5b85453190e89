import pytest

from edgeft.config import RunConfig, build_config
from edgeft.errors import ConfigError


def test_build_config_defaults_are_builtin():
    cfg = build_config({})
    assert cfg.model.startswith("builtin:") and cfg.data.startswith("builtin:")
    assert cfg.targets == ["host"]          # resolved to this CPU's target when a command runs


def test_build_config_unknown_key_is_named():
    with pytest.raises(ConfigError) as e:
        build_config({"train": {"epochz": 3}})
    assert "train.epochz" in str(e.value) and "unknown key" in str(e.value)
    assert "did you mean 'epochs'?" in str(e.value) and "qat_epochs" in str(e.value)


def test_build_config_reports_every_problem_at_once(tmp_path):
    with pytest.raises(ConfigError) as e:
        build_config({"train": {"lr": -1, "batch_size": 0}, "data": str(tmp_path / "nope.csv")})
    msg = str(e.value)
    assert "3 problem(s)" in msg
    assert "train.lr" in msg and "train.batch_size" in msg and "nope.csv" in msg


def test_build_config_eval_data_without_data_fails(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("text,label\na,b\n")
    with pytest.raises(ConfigError, match="--eval-data needs --data"):
        build_config({"eval_data": str(f)})


def test_build_config_overrides_merge_nested_values():
    base = build_config({"train": {"epochs": 2}})
    cfg = build_config({"train": {"lr": 1e-3}}, base)
    assert cfg.train.epochs == 2 and cfg.train.lr == 1e-3
    assert isinstance(cfg, RunConfig)


def test_cli_options_are_made_from_the_config_fields():
    """Every config field has a flag (or is listed as set elsewhere), and every flag's type, choices and
    default come from its field, so help text cannot drift from the code."""
    import re

    import click

    from edgeft.cli.commands import cli
    from edgeft.cli.options import NO_FLAG, PARAM, _field, _unwrap_optional, fields_with_flags, leaf_fields

    assert leaf_fields() - NO_FLAG == fields_with_flags()
    checked = 0
    for param in cli.commands["run"].params:
        if param.name in NO_FLAG or (PARAM not in param.name and param.name not in leaf_fields()):
            continue                                  # --out and the control options are written by hand
        info = _field(param.name.replace(PARAM, "."))
        default = info.get_default(call_default_factory=True)
        m = re.search(r"\[default: ([^\]]+)\]", param.help or "")
        if default in (None, [], {}):
            assert m is None, param.name
        elif isinstance(default, bool):
            assert m.group(1) == ("on" if default else "off"), param.name
        elif isinstance(default, list):
            assert m.group(1) == ", ".join(default), param.name
        else:
            assert m.group(1) == str(default), (param.name, m.group(1), default)
        if isinstance(param.type, click.Choice):
            assert set(param.type.choices) == set(map(str, _unwrap_optional(info.annotation).__args__)), param.name
        checked += 1
    assert checked == len(fields_with_flags())


def test_run_help_lists_options_under_headings():
    from click.testing import CliRunner

    from edgeft.cli.commands import cli

    out = CliRunner().invoke(cli, ["run", "--help"]).output
    heads = ["Model and data:", "Training:", "Images:", "Quantization:", "Targets:", "Output and control:"]
    positions = [out.index(h) for h in heads]
    assert positions == sorted(positions)
    assert out.index("--qat-epochs") > out.index("Quantization:") > out.index("--image-size")


def test_config_reloaded_from_manifest_json_is_identical():
    """Stage commands rebuild the config from manifest.json; a value that changes type on the way (int
    default 1 vs 1.0 from JSON) would change the stage fingerprints and redo a finished fine-tune."""
    import json

    for values in ({}, {"train": {"epochs": 3, "qat_epochs": 2}, "vision": {"image_size": 64}}):
        cfg = build_config(values)
        again = RunConfig.model_validate(json.loads(cfg.model_dump_json()))
        assert json.dumps(again.model_dump(), sort_keys=True, default=str) == \
            json.dumps(cfg.model_dump(), sort_keys=True, default=str)
