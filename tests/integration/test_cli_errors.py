"""Bad input: one clear message naming the problem and the fix, exit 1, no traceback, nothing written."""
from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgeft.cli.commands import cli
from tests.conftest import write_csv


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _assert_clean_failure(result, *needles, out_dir=None):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "error:" in result.output and "fix:" in result.output
    for n in needles:
        assert n in result.output, result.output
    if out_dir is not None:
        leftovers = [p.name for p in out_dir.iterdir()] if out_dir.exists() else []
        assert not any(n in leftovers for n in ("finetune", "export", "compile", "verify", "report.json")), leftovers


def test_run_missing_data_file(tmp_path):
    r = invoke("run", "--data", tmp_path / "nope.csv", "--out", tmp_path / "out")
    assert r.exit_code == 1 and "path does not exist" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists()


def test_run_wrong_label_column_lists_columns(tmp_path, tiny_model_dir):
    data = write_csv(tmp_path / "d.csv", [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(20)])
    out = tmp_path / "out"
    r = invoke("run", "--model", tiny_model_dir, "--data", data, "--label-column", "category", "--out", out)
    _assert_clean_failure(r, "'category'", "['text', 'label']", "--label-column", out_dir=out)


def test_run_single_class(tmp_path, tiny_model_dir):
    data = write_csv(tmp_path / "d.csv", [{"text": f"t{i}", "label": "same"} for i in range(20)])
    out = tmp_path / "out"
    _assert_clean_failure(invoke("run", "--model", tiny_model_dir, "--data", data, "--out", out),
                          "only one class", out_dir=out)


def test_run_empty_data(tmp_path, tiny_model_dir):
    data = tmp_path / "d.csv"
    data.write_text("text,label\n")
    out = tmp_path / "out"
    _assert_clean_failure(invoke("run", "--model", tiny_model_dir, "--data", data, "--out", out), "no rows", out_dir=out)


def test_run_bad_calibration_set_fails_before_the_run_directory_exists(tmp_path):
    cal = tmp_path / "cal.yaml"
    cal.write_text("name: mine\nselection_sample: 100\n")            # misspelled key
    out = tmp_path / "out"
    _assert_clean_failure(invoke("run", "--calibration", cal, "--out", out), "selection_sample: unknown key",
                          "selection_samples")
    assert not out.exists()
    _assert_clean_failure(invoke("run", "--calibration", "nope", "--out", out), "Unknown calibration set 'nope'")
    assert not out.exists()


def test_run_unknown_target_fails_before_any_work(tmp_path):
    out = tmp_path / "out"
    r = invoke("run", "--target", "jetson-nope", "--out", out)
    _assert_clean_failure(r, "Unknown target 'jetson-nope'", "x86-avx512-int8")
    assert not out.exists()


def test_run_model_folder_without_config(tmp_path):
    (tmp_path / "m").mkdir()
    data = write_csv(tmp_path / "d.csv", [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(20)])
    out = tmp_path / "out"
    _assert_clean_failure(invoke("run", "--model", tmp_path / "m", "--data", data, "--out", out),
                          "not a Hugging Face model folder", out_dir=out)


def test_print_config_shows_resolved_config_without_running(tmp_path):
    r = invoke("run", "--epochs", "3", "--out", tmp_path / "o", "--print-config")
    assert r.exit_code == 0 and '"epochs": 3.0' in r.output
    assert not (tmp_path / "o").exists()


def test_targets_commands():
    assert "x86-avx512-int8" in invoke("targets", "ls").output
    assert invoke("targets", "validate").exit_code == 0
    assert "backend: onnxruntime-cpu" in invoke("targets", "show", "x86-avx512-int8").output
    r = invoke("targets", "validate", "nope")
    assert r.exit_code == 1 and "Unknown target" in r.output


@pytest.mark.parametrize("argv", [["--help"], ["targets", "ls"], ["run", "--help"]])
def test_cli_light_commands_do_not_import_torch(argv):
    code = ("import sys; from edgeft.cli import main\n"
            "try:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "assert 'transformers' not in sys.modules" % argv)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_python_dash_m_edgeft_works():
    proc = subprocess.run([sys.executable, "-m", "edgeft", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "edgeft" in proc.stdout
