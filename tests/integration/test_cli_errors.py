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
    assert not out.exists()          # the folder this run made, with its log and lock, goes with the failure


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


def test_a_parquet_file_that_is_not_parquet_is_named(tmp_path, tiny_model_dir):
    bad = tmp_path / "d.parquet"
    bad.write_text("text,label\nhello,a\n")
    r = invoke("run", "--model", tiny_model_dir, "--data", bad, "--out", tmp_path / "out")
    _assert_clean_failure(r, "d.parquet", "as parquet", out_dir=tmp_path / "out")


def test_a_model_folder_with_a_corrupt_config_is_named(tmp_path, tiny_model_dir, intents_csv):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "config.json").write_text('{"model_type": "bert", ')
    r = invoke("run", "--model", model, "--data", intents_csv, "--text-column", "utterance", "--label-column",
               "category", "--out", tmp_path / "out")
    _assert_clean_failure(r, "config.json is not valid JSON", out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_max_length_beyond_the_models_positions_fails_before_any_work(tmp_path, tiny_model_dir, intents_csv):
    r = invoke("run", "--model", tiny_model_dir, "--data", intents_csv, "--text-column", "utterance",
               "--label-column", "category", "--max-length", "600", "--out", tmp_path / "out")
    _assert_clean_failure(r, "max_position_embeddings 128", "--max-length 128")
    assert not (tmp_path / "out").exists()


def test_csv_from_excel_with_a_byte_order_mark_reads(tmp_path):
    from edgeft.data.sources import read_table

    p = tmp_path / "excel.csv"
    p.write_bytes("\ufefftext,label\nturn on the lights,on\n".encode("utf-8"))
    assert read_table(p) == [{"text": "turn on the lights", "label": "on"}]


def test_an_unclosed_quote_gets_the_right_fix(tmp_path):
    from edgeft.data.sources import CSV_FIELD_LIMIT, read_table
    from edgeft.errors import DataError

    p = tmp_path / "broken.csv"
    p.write_text('text,label\n"an unclosed quote,a\n' + "x" * (CSV_FIELD_LIMIT + 10) + "\n")
    with pytest.raises(DataError) as e:
        read_table(p)
    assert "quote that is never closed" in str(e.value) and "UTF-8" not in str(e.value)


def test_missing_labels_are_dropped_and_counted_and_mixed_types_refused(tmp_path):
    from edgeft.data.loading import to_examples
    from edgeft.errors import DataError

    rows = [{"text": "a", "label": 1}, {"text": "b", "label": float("nan")}, {"text": "c", "label": None},
            {"text": "d", "label": 2.0}, {"text": "e", "label": ""}]
    examples, dropped = to_examples(rows, "t.jsonl", "text", "label")
    assert [e.label for e in examples] == ["1", "2"] and dropped["missing_label"] == 3
    kept, _ = to_examples([{"text": "hi", "label": "greeting"}, {"text": "hmm", "label": "none"}], "t.csv", "text", "label")
    assert [e.label for e in kept] == ["greeting", "none"]             # a class may be called "none"
    with pytest.raises(DataError, match="both as numbers and as text"):
        to_examples([{"text": "a", "label": 1}, {"text": "b", "label": "1"}], "t.jsonl", "text", "label")


def test_absurd_calibration_counts_are_refused(tmp_path):
    from edgeft.calibration import load_calibration
    from edgeft.errors import ConfigError

    p = tmp_path / "c.yaml"
    p.write_text("name: c\nnum_samples: 25600000\n")
    with pytest.raises(ConfigError, match="num_samples"):
        load_calibration(str(p))


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory, tiny_model_dir):
    """A compiled engine folder from the tiny model, via the CLI."""
    from tests.conftest import write_intents_csv, write_loose_target

    tmp = tmp_path_factory.mktemp("engine")
    data = write_intents_csv(tmp / "d.csv")
    target = write_loose_target(tmp / "t.yaml", "t")
    r = invoke("run", "--model", tiny_model_dir, "--data", data, "--text-column", "utterance", "--label-column",
               "category", "--epochs", "1", "--max-steps", "2", "--qat-epochs", "0", "--max-length", "32",
               "--target", target, "--out", tmp / "run")
    assert r.exit_code == 0, r.output
    return tmp / "run/compile/t/engine"


def _runtime(*args):
    return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, text=True)


def test_device_runtime_names_a_wrong_folder_and_a_missing_file(engine_dir, tmp_path):
    import shutil

    r = _runtime("edgeft_runtime.predict", engine_dir.parent, "hello")
    assert r.returncode == 1 and "not an engine folder" in r.stderr and "Traceback" not in r.stderr
    broken = tmp_path / "engine"
    shutil.copytree(engine_dir, broken)
    (broken / "tokenizer.json").unlink()
    r = _runtime("edgeft_runtime.predict", broken, "hello")
    assert r.returncode == 1 and "tokenizer.json" in r.stderr and "Traceback" not in r.stderr
    r = _runtime("edgeft_runtime.predict", engine_dir, "")
    assert r.returncode == 0 and "warning: an empty input" in r.stderr


def test_latency_refuses_a_sequence_beyond_the_models_positions(engine_dir):
    r = _runtime("edgeft.runtime.latency", engine_dir, "--shape", "input_ids=1x4096", "--iters", "1")
    assert r.returncode == 1 and "at most 128 tokens" in r.stderr and "Traceback" not in r.stderr


def test_out_of_range_options_name_the_flag_and_fail_before_the_run_directory(tmp_path):
    out = tmp_path / "out"
    r = invoke("run", "--seed", "-5", "--epochs", "inf", "--lr", "nan", "--out", out)
    _assert_clean_failure(r, "--seed (seed)", "--epochs (train.epochs): Input should be a finite number",
                          "--lr (train.lr)", "`--help` lists each")
    assert not out.exists()


def test_an_out_that_is_a_file_or_cannot_be_written_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    _assert_clean_failure(invoke("run", "--out", tmp_path / "f"), "is a file")
    assert (tmp_path / "f").read_text() == "x"
    _assert_clean_failure(invoke("run", "--out", "/proc/edgeft-cannot-be-here/out"), "cannot be written")
    _assert_clean_failure(invoke("verify", tmp_path / "f"), "not an edgeft run directory")


def test_stage_commands_refuse_options_they_do_not_read(tiny_run):
    r = invoke("verify", tiny_run["out"], "--epochs", "3", "--lr", "0.1")
    _assert_clean_failure(r, "--epochs, --lr: not read by `edgeft verify`", f"`edgeft finetune {tiny_run['out']}`")
    r = invoke("compile", tiny_run["out"], "--quant", "ptq")
    _assert_clean_failure(r, "--quant: not read by `edgeft compile`")
    assert "[default: as recorded in the run]" in " ".join(invoke("verify", "--help").output.split())


def test_run_names_a_damaged_file_it_redoes_and_verify_names_an_edited_report(tiny_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run["out"], run_dir)
    engine = run_dir / "compile/test-int8/engine/model.onnx"
    data = bytearray(engine.read_bytes())
    data[-10] ^= 0xFF
    engine.write_bytes(bytes(data))
    args = [str(a) for a in tiny_run["args"]]
    args[args.index("--out") + 1] = str(run_dir)
    r = invoke(*args[1:]) if args[0] != "run" else invoke(*args)
    assert r.exit_code == 0, r.output
    assert "compile: compile/test-int8/engine/model.onnx is missing or was changed since this stage wrote it" in r.output
    assert "finetune: up to date, skipped" in r.output
    (run_dir / "report.md").write_text((run_dir / "report.md").read_text() + "my notes\n")
    r = invoke("verify", run_dir)
    _assert_clean_failure(r, "report.md was changed since edgeft wrote it", "keep your edits in a copy")
