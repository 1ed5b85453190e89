"""Accuracy-driven fallback: when an engine fails an accuracy gate, keep the most sensitive blocks in
FP32 (their Q/DQ removed at export) and rebuild, one more block per round, until the gates pass or the
budget (``fallback`` blocks, and ``fallback_minutes`` of rebuilding when set) is spent. Every round is recorded in the report with its accuracy and
latency, so the cost of each fallback is visible."""
from __future__ import annotations

import time

from edgeft.config import build_config
from edgeft.fileio import read_json, write_json_atomic, write_text_atomic
from edgeft.pipeline import run_stage
from edgeft.report import render_markdown

ACCURACY_GATES = {"accuracy_drop", "top1_agreement", "rmse_increase"}


def _accuracy_failed(report: dict) -> bool:
    return any(g["name"] in ACCURACY_GATES and g["passed"] is False for e in report["engines"] for g in e["gates"])


def _snapshot(report: dict, kept: list[str]) -> dict:
    return {"kept_fp32": list(kept), "passed": report["passed"],
            "engines": {e["target"]: {k: e.get(k) for k in ("accuracy", "top1_agreement", "rmse")}
                        | {"p50_ms": (e["latency_ms"] or {}).get("p50_ms")}
                        for e in report["engines"] if e["role"] == "engine"}}


def accuracy_fallback(ctx) -> None:
    report = read_json(ctx.path("verify/report.json"))
    if not _accuracy_failed(report):
        return
    sens = read_json(ctx.path("finetune/metrics.json"))["qat"].get("sensitivity") or []
    kept = list(ctx.config.keep_fp32)
    order = [r["group"] for r in sens if r["group"] not in kept]
    rounds = [_snapshot(report, kept)]
    t0, limit = time.monotonic(), ctx.config.fallback_minutes
    stopped_by = "blocks"
    for group in order[: ctx.config.fallback]:
        if limit is not None and time.monotonic() - t0 > limit * 60:
            stopped_by = "time"
            break
        kept.append(group)
        ctx.log(f"fallback: accuracy gate failed; keeping {kept} in FP32 and rebuilding")
        ctx.config = build_config({"keep_fp32": kept}, ctx.config)
        ctx.manifest.data["config"]["keep_fp32"] = kept
        for stage in ("export", "compile", "verify"):
            run_stage(ctx, stage)
        report = read_json(ctx.path("verify/report.json"))
        rounds.append(_snapshot(report, kept))
        if not _accuracy_failed(report):
            break
    resolved = not _accuracy_failed(report)
    report["fallback"] = {"budget": ctx.config.fallback, "budget_minutes": limit, "kept_fp32": kept,
                          "rounds": rounds, "resolved": resolved, "stopped_by": None if resolved else stopped_by,
                          "minutes": round((time.monotonic() - t0) / 60, 2)}
    write_json_atomic(ctx.path("verify/report.json"), report)
    write_text_atomic(ctx.path("verify/report.md"), render_markdown(report))
    ctx.manifest.save()
