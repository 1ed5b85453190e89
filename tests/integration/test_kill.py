"""A run killed (SIGKILL, no clean-up) in any stage, or between a stage's folder swap and its manifest
record, resumes: the re-run's engines and predictions equal those of a run that was never interrupted."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeft_runtime.fileio import sha256_file

STAGES = ("finetune", "export", "compile", "verify")
# run in a child process: die (SIGKILL, as the OOM killer or `kill -9` would) right after a stage's folder
# was swapped in, before the manifest records it
SWAP_THEN_DIE = """
import os, signal, sys
from edgeft import pipeline
swap = pipeline._swap_in
def swap_then_die(work, final):
    swap(work, final)
    if final.name == sys.argv[1]:
        os.kill(os.getpid(), signal.SIGKILL)
pipeline._swap_in = swap_then_die
from edgeft.cli import main
main(sys.argv[2:])
"""


def _args(model, data, target, out):
    return ["run", "--model", str(model), "--data", str(data), "--text-column", "utterance", "--label-column",
            "category", "--epochs", "2", "--qat-epochs", "1", "--lr", "1e-3", "--max-length", "32", "--target",
            str(target), "--out", str(out)]


def _run(args, **kw):
    return subprocess.run([sys.executable, "-m", "edgeft", *args], capture_output=True, text=True, timeout=900, **kw)


def _kill_during(args, stage: str) -> None:
    """Start the run and SIGKILL it once the stage has started (and had a moment to write)."""
    proc = subprocess.Popen([sys.executable, "-m", "edgeft", *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)
    try:
        for line in proc.stderr:
            if f"[edgeft] {stage}: started" in line:
                time.sleep(0.1)               # inside the stage: the shortest (compile) takes seconds
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _outcome(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    engines = {(e["target"], e["role"]): (e["accuracy"], e["top1_agreement"], [(g["name"], g["passed"]) for g in e["gates"]])
               for e in report["engines"]}
    preds = {p.name: np.load(p) for p in sorted((out / "verify/predictions").glob("*.npy"))}
    files = {p.relative_to(out).as_posix(): sha256_file(p) for p in sorted((out / "compile").rglob("*")) if p.is_file()}
    return {"engines": engines, "preds": preds, "files": files}


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    from tests.conftest import write_intents_csv, write_loose_target

    tmp = tmp_path_factory.mktemp("kill")
    data = write_intents_csv(tmp / "intents.csv")
    target = write_loose_target(tmp / "t.yaml", "t")
    r = _run(_args(tiny_model_dir, data, target, tmp / "uninterrupted"))
    assert r.returncode == 0, r.stderr[-3000:]
    return {"data": data, "target": target, "tmp": tmp, "outcome": _outcome(tmp / "uninterrupted")}


def _assert_same(out: Path, reference: dict) -> None:
    got = _outcome(out)
    assert got["engines"] == reference["outcome"]["engines"]
    assert got["files"] == reference["outcome"]["files"]
    for name, logits in reference["outcome"]["preds"].items():
        np.testing.assert_array_equal(got["preds"][name], logits)


@pytest.mark.parametrize("stage", STAGES)
def test_sigkill_in_a_stage_then_rerun_equals_an_uninterrupted_run(reference, tiny_model_dir, stage):
    out = reference["tmp"] / f"killed-in-{stage}"
    args = _args(tiny_model_dir, reference["data"], reference["target"], out)
    _kill_during(args, stage)
    r = _run(args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{stage}: started" in r.stderr
    _assert_same(out, reference)


def test_sigkill_between_the_folder_swap_and_the_manifest_record(reference, tiny_model_dir):
    out = reference["tmp"] / "killed-after-swap"
    args = _args(tiny_model_dir, reference["data"], reference["target"], out)
    killed = subprocess.run([sys.executable, "-c", SWAP_THEN_DIE, "export", *args], capture_output=True, text=True,
                            timeout=900)
    assert killed.returncode == -signal.SIGKILL
    assert (out / "export/int8/model.onnx").is_file()
    assert "export" not in json.loads((out / "manifest.json").read_text())["stages"]
    r = _run(args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "finetune: up to date" in r.stderr and "export: started" in r.stderr
    _assert_same(out, reference)
