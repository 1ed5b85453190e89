"""Regression (numeric labels, one output, MSE) through the whole flow on the tiny BERT."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgeft.cli.commands import cli
from tests.conftest import write_csv

pytestmark = pytest.mark.filterwarnings("ignore")


def test_regression_run_trains_mse_and_reports_rmse(tiny_model_dir, tmp_path):
    # the target is carried by one word: 7.0 with "music", 2.0 with "lights"
    rows = [{"text": f"{'play the music' if i % 2 else 'turn on the lights'} number {i}",
             "score": "7.0" if i % 2 else "2.0"} for i in range(120)]
    data = write_csv(tmp_path / "reg.csv", rows)
    target = tmp_path / "t.yaml"
    target.write_text("name: reg\nbackend: onnxruntime-cpu\nprecision: int8\ndevice: {kind: cpu, isa: any, threads: 1}\n"
                      "input_shapes: {input_ids: {min: [1, 1], opt: [1, 16], max: [4, 64]}}\n"
                      "gates: {accuracy: {max_drop: 0.01}, agreement: {min_top1: 0.99}, rmse: {max_increase: 0.2}}\n")
    # a real bar: the INT8 engine's RMSE within 20% of the baseline's (measured: 1.4% better); a broken
    # engine (saturated kernels, a dropped quantizer) misses it
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["run", "--model", str(tiny_model_dir), "--data", str(data), "--label-column", "score",
                                 "--task", "regression", "--epochs", "6", "--lr", "3e-3", "--batch-size", "8", "--max-length", "32",
                                 "--target", str(target), "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    m = json.loads((out / "finetune/metrics.json").read_text())
    assert m["task"] == "regression" and m["labels"] == ["value"]
    assert "target_stats" in m["data_report"] and m["data_report"]["target_stats"]["train"]["max"] == 7.0
    # the model learned the target: far better than always predicting the mean (RMSE = std = 2.5)
    assert m["baseline"]["test_rmse"] < 0.5 * m["data_report"]["target_stats"]["test"]["std"]
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "regression" and report["metric"] == "rmse"
    eng = next(e for e in report["engines"] if e["role"] == "engine")
    assert [g["name"] for g in eng["gates"]] == ["rmse_increase"], "accuracy/agreement do not apply to regression"
    assert eng["accuracy"] is None and eng["rmse"] > 0 and eng["mean_abs_diff_vs_baseline"] >= 0
    assert "| rmse | Δ vs baseline | mean abs Δ vs baseline |" in (out / "report.md").read_text()


def test_regression_with_text_labels_is_refused(tiny_model_dir, tmp_path):
    data = write_csv(tmp_path / "d.csv", [{"text": f"t{i}", "label": "high" if i % 2 else "low"} for i in range(30)])
    r = CliRunner().invoke(cli, ["run", "--model", str(tiny_model_dir), "--data", str(data), "--task", "regression",
                                 "--out", str(tmp_path / "o")], catch_exceptions=False)
    assert r.exit_code == 1 and "numeric labels" in r.output and "Traceback" not in r.output
