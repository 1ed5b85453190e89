"""What a user sees: edgeft's own progress on the console, library chatter in RUN_DIR/edgeft.log."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHATTER = ("is a decorated method", "{'loss'", "{'eval_loss'", "it/s]", "Some weights of")


def _run(tiny_model_dir, intents_csv, out, *extra):
    cmd = [sys.executable, "-m", "edgeft", "run", "--model", str(tiny_model_dir), "--data", str(intents_csv),
           "--text-column", "utterance", "--label-column", "category", "--epochs", "2", "--max-steps", "6",
           "--max-length", "32", "--target", "x86-avx2-int8", "--accept-unmeasured", "--out", str(out), *extra]
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def quiet_and_verbose(tiny_model_dir, tmp_path_factory):
    from tests.conftest import write_intents_csv

    tmp = tmp_path_factory.mktemp("console")
    data = write_intents_csv(tmp / "intents.csv")
    return (_run(tiny_model_dir, data, tmp / "quiet"), tmp / "quiet",
            _run(tiny_model_dir, data, tmp / "verbose", "--verbose"))


def test_console_shows_stages_with_time_and_progress_but_no_library_chatter(quiet_and_verbose):
    quiet, out, _ = quiet_and_verbose
    assert quiet.returncode in (0, 3), quiet.stderr[-3000:]
    console = quiet.stdout + quiet.stderr
    for stage in ("finetune", "export", "compile", "verify"):
        assert f"[edgeft] {stage}: started" in console and f"[edgeft] {stage}: done in " in console
    assert "  training, 2 epoch(s): 6/6 in " in console             # the bar's closing line off a terminal
    assert "epoch 1: validation loss" in console
    for noise in CHATTER:
        assert noise not in console, noise
    log = (out / "edgeft.log").read_text()
    assert "is a decorated method" in log and "trainer: step" in log      # kept, in the run's log


def test_verbose_shows_library_output_too(quiet_and_verbose):
    _, _, verbose = quiet_and_verbose
    assert verbose.returncode in (0, 3), verbose.stderr[-3000:]
    assert "is a decorated method" in verbose.stderr and "trainer: step" in verbose.stderr


def test_a_long_bar_off_a_terminal_says_where_it_is_now_and_then(monkeypatch):
    import io

    from edgeft import console as console_mod

    out = io.StringIO()
    con = console_mod.Console()
    con._out = out
    monkeypatch.setattr(console_mod._Bar, "EVERY_S", 0.0)
    with con.progress("bench: timing", 3) as bar:
        for i in range(1, 4):
            bar.update(i, note=f"engine {i}")
    lines = out.getvalue().splitlines()
    assert lines[0] == "  bench: timing: 3 steps"
    assert any(line.startswith("  bench: timing: 2/3 after") and "(engine 2)" in line for line in lines)
    assert lines[-1].startswith("  bench: timing: 3/3 in")
