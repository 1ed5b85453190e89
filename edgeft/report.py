"""report.json (schema documented in README) and report.md, built from verify's results. Torch-free."""
from __future__ import annotations

from typing import Any

REPORT_SCHEMA_VERSION = 1


def _fmt(v: Any, spec: str = ".4f") -> str:
    return "–" if v is None else format(v, spec)


def verdict_of(item: dict[str, Any]) -> str:
    """``passed``, ``failed`` or ``incomplete`` (a gate not measured) of a report or one of its engines;
    reports written before verdicts existed only have ``passed``."""
    return item.get("verdict") or ("passed" if item["passed"] else "failed")


def render_markdown(report: dict[str, Any]) -> str:
    b = report["baseline"]
    metric = report.get("metric", "accuracy")
    regression = metric == "rmse"
    agree_head = "mean abs Δ vs baseline" if regression else "top-1 agreement"
    lines = [
        f"# edgeft report — {verdict_of(report).upper()}",
        "",
        f"Run: `{report['run_dir']}`  ",
        f"Host: {report['host']['cpu']} ({report['host']['cores']} cores; int8 ISA {report['host'].get('isa_class', '?')}: "
        f"{report['host'].get('isa_flags', '?')}), {report['host']['platform']}  ",
        f"Test split: {report['test_examples']} examples. Baseline ({b['name']}): {metric} **{b[metric]:.4f}**.  ",
        f"Latency: batch × sequence as in each target's `opt` shape, each engine in its own process, "
        f"median of {report['latency_rounds']} interleaved rounds.",
        "",
        f"| target | engine | precision | {metric} | Δ vs baseline | {agree_head} | p50 ms | p90 ms | p99 ms | × FP32 p50 | int8 share | size MB | gates |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in report["engines"]:
        lat = e["latency_ms"] or {}
        gates = {"passed": "pass", "failed": "**FAIL**", "incomplete": "incomplete"}[verdict_of(e)]
        if e["role"] == "fp32-reference":
            gates = "(reference)"
        role = f"{e['role']} (deferred kit, via ORT)" if e.get("deferred") else e["role"]
        lines.append(
            f"| {e['target']} | {role} | {e['precision']} | {e[metric]:.4f} | {e[metric + '_delta']:+.4f} "
            f"| {e['mean_abs_diff_vs_baseline' if regression else 'top1_agreement']:.4f} | {_fmt(lat.get('p50_ms'), '.2f')} | {_fmt(lat.get('p90_ms'), '.2f')} "
            f"| {_fmt(lat.get('p99_ms'), '.2f')} | {_fmt(e['latency_ratio_vs_fp32'], '.2f')} "
            f"| {_fmt(e['where_it_ran'].get('int8_share'), '.0%')} | {e['size_bytes'] / 1e6:.1f} | {gates} |")
    lines += ["", "## Gates", "", "| target | gate | value | threshold | result |", "|---|---|---|---|---|"]
    for e in report["engines"]:
        for g in e["gates"]:
            mark = (f"not measured: {g.get('not_measured', 'here')}" if g["passed"] is None
                    else ("✓" if g["passed"] else "✗"))
            lines.append(f"| {e['target']} | {g['name']} | {_fmt(g['value'])} | {g['op']} {_fmt(g['threshold'])} | {mark} |")
    traffic = [e for e in report["engines"] if e.get("test_split_latency_ms")]
    if traffic:
        lines += ["", "## Latency on the test split", "",
                  "Each test input at batch 1 and its own length, in this process (the table above times the "
                  "target's `opt` shape in a fresh process).", "",
                  "| target | engine | p50 ms | p99 ms | mean ms | inputs |", "|---|---|---|---|---|---|"]
        for e in traffic:
            t = e["test_split_latency_ms"]
            lines.append(f"| {e['target']} | {e['role']} | {t['p50_ms']:.2f} | {t['p99_ms']:.2f} | "
                         f"{t['mean_ms']:.2f} | {t['inputs']} |")
    fb = report.get("fallback")
    if fb:
        lines += ["", f"## Accuracy fallback ({'resolved' if fb['resolved'] else 'budget spent, still failing'})", "",
                  "| round | kept in FP32 | target | accuracy | top-1 agreement | p50 ms |", "|---|---|---|---|---|---|"]
        for i, r in enumerate(fb["rounds"]):
            for target, e in r["engines"].items():
                lines.append(f"| {i} | {', '.join(r['kept_fp32']) or '–'} | {target} | {_fmt(e.get('accuracy'))} "
                             f"| {_fmt(e.get('top1_agreement'))} | {_fmt(e.get('p50_ms'), '.2f')} |")
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"
