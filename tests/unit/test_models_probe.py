"""--model defects a new-user probe found: a folder that is not a complete model, unknown names reported by the
wrong reason on text data, and a random-init warning that never reached the console."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from edgeft.config import RunConfig
from edgeft.errors import ConfigError
from edgeft.models import check_before_work, check_model_folder, family_for
from tests.conftest import write_csv

REPO = Path(__file__).resolve().parents[2]


def invoke(*args):
    from edgeft.cli.commands import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _assert_clean_failure(result, *needles):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "error:" in result.output and "fix:" in result.output
    for n in needles:
        assert n in result.output, result.output


@pytest.fixture
def text_csv(tmp_path):
    return write_csv(tmp_path / "d.csv", [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(20)])


@pytest.fixture
def config_only(tmp_path):
    folder = tmp_path / "config-only"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 64}))
    return folder


@pytest.fixture(scope="module")
def tiny_weights_only(tmp_path_factory):
    """A tiny BERT saved with save_pretrained but without its tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("weights-only")
    BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=32, max_position_embeddings=32)).save_pretrained(folder)
    return folder


def _cfg(model: str, **kw) -> RunConfig:
    return RunConfig(model=str(model), **kw)


# 1. a folder that is not a complete model


def test_config_only_folder_names_the_folder_and_everything_missing(config_only):
    with pytest.raises(ConfigError) as e:
        check_model_folder(config_only)
    assert str(config_only) in str(e.value)
    assert e.value.message.endswith("is not a complete model folder: no weights (model.safetensors or "
                                    "pytorch_model.bin); no tokenizer (tokenizer.json, vocab.txt, vocab.json or "
                                    "a sentencepiece .model file)")
    assert "model.save_pretrained(folder)" in e.value.fix and "tokenizer.save_pretrained(folder)" in e.value.fix


def test_config_only_folder_fails_in_the_stage_with_a_config_error_not_a_type_error(config_only):
    # the probe's crash: TypeError from tokenization_bert.py when the family was built
    with pytest.raises(ConfigError, match="not a complete model folder"):
        family_for(_cfg(config_only), "text")


def test_config_only_folder_on_the_command_line_exits_1_before_any_work(config_only, text_csv, tmp_path):
    out = tmp_path / "out"
    _assert_clean_failure(invoke("run", "--model", config_only, "--data", text_csv, "--out", out),
                          str(config_only), "no weights", "tokenizer", "save_pretrained")
    assert not out.exists()


def test_the_folder_check_imports_no_heavy_library(config_only):
    code = ("import sys; from edgeft.models import check_model_folder\n"
            f"try:\n    check_model_folder({str(config_only)!r})\nexcept Exception:\n    pass\n"
            "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_weights_without_tokenizer_names_only_the_tokenizer(tiny_weights_only, tmp_path):
    with pytest.raises(ConfigError) as e:
        check_before_work(_cfg(tiny_weights_only))
    assert e.value.message == (f"{tiny_weights_only} is not a complete model folder: no tokenizer (tokenizer.json, "
                            "vocab.txt, vocab.json or a sentencepiece .model file)")


def test_weights_without_tokenizer_on_the_command_line(tiny_weights_only, text_csv, tmp_path):
    _assert_clean_failure(invoke("run", "--model", tiny_weights_only, "--data", text_csv, "--out", tmp_path / "out"),
                          str(tiny_weights_only), "tokenizer", "tokenizer.save_pretrained")


def test_an_unloadable_tokenizer_becomes_a_config_error_naming_the_folder(tiny_weights_only, tmp_path):
    # tokenizer_config.json alone passes the file check (vocabulary-free tokenizers need no more); the library's
    # own exception on loading it must still end as one edgeft error
    folder = tmp_path / "m"
    shutil.copytree(tiny_weights_only, folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))
    check_model_folder(folder)
    with pytest.raises(ConfigError) as e:
        family_for(_cfg(folder), "text")
    assert f"cannot load a tokenizer (tokenizer files there: ['tokenizer_config.json']) from {folder}" in str(e.value)
    assert "tokenizer.save_pretrained" in e.value.fix


def test_corrupt_weights_become_a_config_error_naming_the_folder(tiny_model_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    family = family_for(_cfg(folder), "text")
    with pytest.raises(ConfigError, match=f"cannot load a text classifier from {folder}"):
        family.new_model(["a", "b"])


@pytest.mark.parametrize("text", ['{"model_type": "bert", ', "[1, 2]"])
def test_corrupt_config_json_is_named(tiny_model_dir, tmp_path, text_csv, text):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "config.json").write_text(text)
    for call in (lambda: check_before_work(_cfg(folder)), lambda: family_for(_cfg(folder), "text")):
        with pytest.raises(ConfigError, match="config.json"):
            call()
    _assert_clean_failure(invoke("run", "--model", folder, "--data", text_csv, "--out", tmp_path / "out"),
                          str(folder / "config.json"))


def test_unknown_model_type_in_config_becomes_a_config_error(tiny_model_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(ConfigError, match=f"from {folder}"):
        family_for(_cfg(folder), "text").new_model(["a", "b"])


def test_sharded_weights_with_a_missing_shard_are_named(tiny_model_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"weight shard\(s\) \['model-00002-of-00002.safetensors'\] listed in "
                                            r"model.safetensors.index.json are missing"):
        check_model_folder(folder)


def test_tensorflow_only_weights_say_how_to_convert(tiny_model_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").rename(folder / "tf_model.h5")
    with pytest.raises(ConfigError, match="only has tf_model.h5.*from_tf=True"):
        check_model_folder(folder)


def test_a_complete_text_folder_and_a_vision_folder_without_preprocessor_pass(tiny_model_dir, tmp_path):
    check_model_folder(tiny_model_dir)
    check_before_work(_cfg(tiny_model_dir))
    check_before_work(RunConfig())       # the built-in model
    vision = tmp_path / "vision"
    vision.mkdir()
    (vision / "config.json").write_text(json.dumps({"model_type": "resnet"}))
    (vision / "model.safetensors").write_bytes(b"")
    check_model_folder(vision)          # edgeft's pre-processing comes from --image-size, not preprocessor_config.json


def test_a_missing_folder_a_file_and_a_folder_without_config(tmp_path, text_csv):
    with pytest.raises(ConfigError, match="no such folder"):
        check_model_folder(tmp_path / "nope")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="is a file; a Hugging Face model is a folder") as e:
        check_model_folder(tmp_path / "model.safetensors")
    assert f"pass --model {tmp_path} " in e.value.fix
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a Hugging Face model folder"):
        check_model_folder(tmp_path / "empty")
    out = tmp_path / "out"
    _assert_clean_failure(invoke("run", "--model", tmp_path / "empty", "--data", text_csv, "--out", out),
                          "not a Hugging Face model folder (no config.json)")
    assert not out.exists()            # said before the run directory is made, not after the data is read


def test_later_stages_do_not_need_the_original_folder(tmp_path):
    # export/compile/verify run check_before_work with the recorded model, which may be gone by then
    check_before_work(RunConfig.model_validate({"model": str(tmp_path / "gone")}, context={"check_paths": False}))


# 2. an unknown name is unknown, whatever the data


@pytest.mark.parametrize("model, needles", [
    ("torchvision:resnet9000", ("unknown torchvision model 'resnet9000'", "resnet18", "efficientnet_b0")),
    ("hf-config:llama", ("unknown Hugging Face config 'llama'", "resnet", "mobilenet_v2", "vit")),
    ("hf-config:", ("unknown Hugging Face config ''",)),
])
@pytest.mark.parametrize("modality", ["text", "image"])
def test_unknown_model_name_is_reported_as_unknown_for_any_data(model, needles, modality):
    with pytest.raises(ConfigError) as e:
        family_for(_cfg(model), modality)
    assert "image model but the data is text" not in str(e.value)
    for n in needles:
        assert n in str(e.value)
    with pytest.raises(ConfigError, match="unknown"):
        check_before_work(_cfg(model))


@pytest.mark.parametrize("model", ["torchvision:resnet9000", "hf-config:llama"])
def test_unknown_model_name_on_text_data_from_the_command_line(model, text_csv, tmp_path):
    out = tmp_path / "out"
    r = invoke("run", "--model", model, "--data", text_csv, "--out", out)
    _assert_clean_failure(r, "unknown", "Supported" if model.startswith("torchvision") else "hf-config builds one of")
    assert "is an image model" not in r.output
    assert not out.exists()


def test_a_known_image_model_on_text_data_still_says_so():
    with pytest.raises(ConfigError, match="is an image model but the data is text"):
        family_for(_cfg("torchvision:resnet18"), "text")


# 3. random initialization is said on the console, once


@pytest.mark.parametrize("model, needle", [
    ("torchvision:resnet18", "warning: torchvision:resnet18 has no --weights: random initialization"),
    ("hf-config:resnet", "warning: hf-config:resnet is built from its default config: random initialization"),
])
def test_random_init_warning_is_printed_on_the_console_once(model, needle, capsys):
    family_for(_cfg(model), "image")
    err = capsys.readouterr().err
    assert needle in err and err.count("random initialization") == 1


def test_no_random_init_warning_with_weights_pretrained_folders_or_saved_models(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "w.pth").write_bytes(b"")
    family_for(_cfg("torchvision:resnet18", weights=str(tmp_path / "w.pth")), "image")
    family_for(_cfg(tiny_model_dir), "text")
    family_for(_cfg("torchvision:resnet18"), "image", saved=tmp_path)      # export/bench reload a trained model
    assert "random initialization" not in capsys.readouterr().err


def test_finetune_stage_says_random_init_on_the_console(tmp_path, capsys):
    """The stage itself, stopped right after the model family is chosen (no training)."""
    from edgeft.data.example import Example
    from edgeft.data.loading import SplitData
    from edgeft.pipeline import log
    from edgeft.stages import finetune

    class Stop(Exception):
        pass

    def stop(*_, **__):
        raise Stop

    examples = [Example(str(tmp_path / f"{i}.png"), "ab"[i % 2]) for i in range(4)]
    data = SplitData(train=examples, validation=examples, test=examples, labels=["a", "b"], modality="image",
                     report={"counts": {}, "dropped": {}, "class_distribution_before": {},
                             "class_distribution": {"train": {}}})
    ctx = SimpleNamespace(config=_cfg("torchvision:resnet18"), splits=lambda: data, log=log, fingerprint=stop,
                          run_dir=tmp_path)
    with pytest.raises(Stop):
        finetune.run(ctx, tmp_path / "work")
    err = capsys.readouterr().err
    assert "[edgeft] finetune: warning: torchvision:resnet18 has no --weights: random initialization" in err
    assert err.count("random initialization") == 1
