"""`torchrun --nproc_per_node 2` runs the finetune stage as DDP (gloo, CPU) with no code change:
both ranks end with the same weights, and only rank 0 writes the run directory."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest


@pytest.mark.filterwarnings("ignore")
def test_torchrun_two_cpu_ranks_agree_and_only_rank0_writes(tiny_model_dir, intents_csv, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "edgeft", "finetune", str(out), "--model", str(tiny_model_dir), "--data", str(intents_csv),
           "--text-column", "utterance", "--label-column", "category", "--epochs", "2", "--lr", "1e-3",
           "--max-length", "32", "--qat-epochs", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}   # CPU ranks, also on a GPU machine
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    digests = dict(re.findall(r"\[edgeft rank (\d)\] finetune: baseline weights digest (\w+)", log))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], digests
    assert "[edgeft rank 1] finetune: imbalance handling: none; 2 training process(es)" in log
    assert "[edgeft rank 0] finetune: done" in log and "[edgeft rank 1] finetune: done" not in log
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))     # .edgeft.lock stays
    assert visible == ["edgeft.log", "finetune", "manifest.json"], list(out.iterdir())
    m = json.loads((out / "manifest.json").read_text())
    assert "finetune" in m["stages"]
    assert any(a["path"] == "finetune/qat/modelopt_state.pth" for a in m["artifacts"])
