"""Accuracy-driven fallback: when an engine fails an accuracy gate, keep the most sensitive blocks in
FP32 (their Q/DQ removed at export) and rebuild, one more block per round, until the gates pass or the
budget (``fallback`` blocks, and ``fallback_minutes`` of rebuilding when set) is spent. Every round is recorded in the report with its accuracy and
latency, so the cost of each fallback is visible."""
from __future__ import annotations


ACCURACY_GATES = {"accuracy_drop", "top1_agreement", "rmse_increase"}


def accuracy_failed(report: dict) -> bool:
    return any(g["name"] in ACCURACY_GATES and g["passed"] is False for e in report["engines"] for g in e["gates"])


def snapshot(report: dict, kept: list[str]) -> dict:
    return {"kept_fp32": list(kept), "passed": report["passed"],
            "engines": {e["target"]: {k: e.get(k) for k in ("accuracy", "top1_agreement", "rmse")}
                        | {"p50_ms": (e["latency_ms"] or {}).get("p50_ms")}
                        for e in report["engines"] if e["role"] == "engine"}}


def candidates(sensitivity: list[dict], kept: list[str], budget: int) -> list[str]:
    """The blocks to keep in FP32 next, most sensitive first, at most ``budget`` of them."""
    return [r["block"] for r in sensitivity if r["block"] not in kept][:budget]


def summary(report: dict, budget: int, budget_minutes: float | None, kept: list[str], rounds: list[dict],
            stopped_by: str, minutes: float) -> dict:
    resolved = not accuracy_failed(report)
    return {"budget": budget, "budget_minutes": budget_minutes, "kept_fp32": kept, "rounds": rounds,
            "resolved": resolved, "stopped_by": None if resolved else stopped_by, "minutes": round(minutes, 2)}
