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


def test_cli_help_defaults_match_the_config_defaults():
    """Every `[default: X]` the CLI prints for an option that maps to a config field equals that
    field's default, so help text cannot drift from the code."""
    import re

    from edgeft.cli.commands import cli
    from edgeft.config import RunConfig, TrainConfig, VisionConfig

    fields = {**{k: f.default for k, f in RunConfig.model_fields.items()},
              **{k: f.default for k, f in TrainConfig.model_fields.items()},
              **{k: f.default for k, f in VisionConfig.model_fields.items()}}
    fields["targets"] = RunConfig().targets[0]
    checked = 0
    for param in cli.commands["run"].params:
        m = re.search(r"\[default: ([^\]]+)\]", getattr(param, "help", "") or "")
        if not m or param.name not in fields or param.name == "data":   # data: prose for builtin:smarthome
            continue
        shown, default = m.group(1).split(" = ")[0].strip(), fields[param.name]
        if isinstance(default, bool):
            assert shown == ("on" if default else "off"), param.name
        elif isinstance(default, (int, float)):
            assert float(shown) == float(default), (param.name, shown, default)
        elif default is None:
            continue                       # "random init", "none": prose for an unset optional field
        else:
            assert shown == str(default), (param.name, shown, default)
        checked += 1
    assert checked >= 30


def test_config_reloaded_from_manifest_json_is_identical():
    """Stage commands rebuild the config from manifest.json; a value that changes type on the way (int
    default 1 vs 1.0 from JSON) would change the stage fingerprints and redo a finished fine-tune."""
    import json

    for values in ({}, {"train": {"epochs": 3, "qat_epochs": 2}, "vision": {"image_size": 64}}):
        cfg = build_config(values)
        again = RunConfig.model_validate(json.loads(cfg.model_dump_json()))
        assert json.dumps(again.model_dump(), sort_keys=True, default=str) == \
            json.dumps(cfg.model_dump(), sort_keys=True, default=str)
