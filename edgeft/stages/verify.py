"""Stage ``verify``: accuracy, agreement and latency of every engine against the FP32 baseline; gates.

Reads (through the run context): ``finetune.splits`` (test), ``finetune.baseline_test_logits``,
``finetune.facts``, every ``compile.engine`` of the configured targets.
Writes (``verify/``): ``report.json`` (schema in README), ``report.md``, ``predictions/<target>-<role>.npy``.
Accuracy and agreement run each test example at batch 1 through the engine (the deployment case).
Latency runs each engine in its own process (``python -m edgeft.runtime.latency``) at the target's
``opt`` shape, in interleaved rounds; the median of the rounds' percentiles is reported.
Torch is not imported: this stage runs where only numpy + the engine's runtime exist.

Gate failures do not raise here (the report is the product); ``edgeft run``/``verify`` exit 3 on them.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgeft_runtime import hostinfo
from edgeft.errors import EdgeftError
from edgeft_runtime.fileio import read_json, write_json_atomic, write_text_atomic
from edgeft.manifest import Artifact
from edgeft.report import REPORT_SCHEMA_VERSION, render_markdown
from edgeft.targets import TargetSpec, host_isa_note, load_target

NAME = "verify"
LATENCY_ROUNDS = 3
LATENCY_ITERS = 100
ROLES = ("engine", "fp32-reference")
LATENCY_GATES = {"p50_ms", "p50_ratio_vs_fp32"}


def fingerprint(ctx) -> str:
    specs = [load_target(t) for t in ctx.config.targets]
    upstream = ctx.recorded("finetune.baseline_test_logits", "finetune.splits", "finetune.facts")
    for spec in specs:
        upstream += [a for role in ROLES for a in ctx.recorded("compile.engine", target=spec.name, role=role)]
    targets = [s.model_dump() for s in specs]
    host = _host(hostinfo.current())      # latency and the ISA verdict belong to the host they were measured on
    return ctx.fingerprint(NAME, {"targets": targets, "rounds": LATENCY_ROUNDS, "iters": LATENCY_ITERS,
                                  "max_length": ctx.config.train.max_length,
                                  "host": [host["cpu"], host["isa_class"], host["cores"]]}, upstream)


def predict(engine_dir: Path, inputs: list[str], max_length: int, times_ms: list | None = None) -> np.ndarray:
    """Logits of each input (text or image path), one at a time (batch 1, each text at its own length),
    through the engine and the pre-processing it carries (its tokenizer, or its preprocessor.json).
    ``times_ms`` (when given) gets each engine call's time: what real traffic costs on this host."""
    import time

    from edgeft_runtime.inputs import preprocessor_for
    from edgeft_runtime.session import open_engine

    sess = open_engine(engine_dir)
    pre = preprocessor_for(engine_dir, max_length)
    rows = []
    for x in inputs:
        feeds = pre([x], sess.input_names)
        t0 = time.perf_counter()
        rows.append(sess.run(feeds)["logits"][0])
        if times_ms is not None:
            times_ms.append((time.perf_counter() - t0) * 1000)
    return np.stack(rows).astype(np.float32)


def split_latency(times_ms: list[float]) -> dict[str, float] | None:
    """p50/p99/mean of the per-input times over the test split, the first few calls (warm-up) left out."""
    kept = times_ms[min(5, len(times_ms) // 10):]
    if not kept:
        return None
    p50, p99 = np.percentile(kept, [50, 99])
    return {"p50_ms": float(p50), "p99_ms": float(p99), "mean_ms": float(np.mean(kept)), "inputs": len(kept)}


def latency_shapes(engine_dir: Path, spec: TargetSpec) -> dict[str, list[int]]:
    """The target's ``opt`` shapes; an image engine is timed at batch opt[0] and its own image size."""
    from edgeft_runtime.inputs import modality_of

    shapes = dict(spec.latency_shape)
    if modality_of(engine_dir) == "image":
        size = read_json(engine_dir / "preprocessor.json")["image_size"]
        batch = next(iter(shapes.values()))[0] if shapes else 1
        shapes = {"pixel_values": [batch, 3, size, size]}
    return shapes


def measure_latency(engine_dir: Path, spec: TargetSpec) -> dict:
    shapes = [f"--shape={k}={'x'.join(map(str, v))}" for k, v in latency_shapes(engine_dir, spec).items()]
    # -I: isolated from the current folder and PYTHON* variables, so no module planted in a shared run
    # directory (or wherever the user stands) is imported by the timing process
    cmd = [sys.executable, "-I", "-W", "ignore", "-m", "edgeft.runtime.latency", str(engine_dir), *shapes,
           f"--iters={LATENCY_ITERS}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise EdgeftError(f"latency measurement failed for {engine_dir}:\n{proc.stderr[-2000:]}",
                          fix=f"run `{' '.join(cmd)}` to see the full error")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _gates(spec: TargetSpec, row: dict, unmeasured: str | None = None) -> list[dict]:
    """The target's gates on one engine's row. ``unmeasured``: why latency here is not the target's (a
    deferred engine, a host without the target's ISA); its latency gates are then reported as not measured."""
    g, out = spec.gates, []
    if row.get("rmse") is not None:             # regression: the RMSE gate replaces accuracy and agreement
        if g.rmse:
            out.append({"name": "rmse_increase", "value": row["rmse_delta"] / max(row["_base_rmse"], 1e-12),
                        "op": "<=", "threshold": g.rmse.max_increase})
        g = g.model_copy(update={"accuracy": None, "agreement": None})
    if g.accuracy:
        out.append({"name": "accuracy_drop", "value": 0.0 - row["accuracy_delta"], "op": "<=", "threshold": g.accuracy.max_drop})
    if g.agreement:
        out.append({"name": "top1_agreement", "value": row["top1_agreement"], "op": ">=", "threshold": g.agreement.min_top1})
    if g.int8_share and row["precision"] == "int8":
        out.append({"name": "int8_share", "value": row["where_it_ran"].get("int8_share"), "op": ">=",
                    "threshold": g.int8_share.min})
    if g.latency and g.latency.p50_ms is not None:
        p50 = row["latency_ms"]["p50_ms"] if row["latency_ms"] else None
        out.append({"name": "p50_ms", "value": p50, "op": "<=", "threshold": g.latency.p50_ms})
    if g.latency and g.latency.max_ratio_vs_fp32 is not None:
        out.append({"name": "p50_ratio_vs_fp32", "value": row["latency_ratio_vs_fp32"], "op": "<=",
                    "threshold": g.latency.max_ratio_vs_fp32})
    for gate in out:
        v, t = gate["value"], gate["threshold"]
        if unmeasured and gate["name"] in LATENCY_GATES:
            gate["not_measured"] = unmeasured
        elif v is None:
            gate["not_measured"] = "no value was measured"
        # None: not measured here; never counted as passed (the verdict becomes incomplete)
        gate["passed"] = None if "not_measured" in gate else (v <= t + 1e-12 if gate["op"] == "<=" else v >= t - 1e-12)
    return out


def verdict(gate_results: list[bool | None]) -> str:
    """failed if any gate failed, else incomplete if any was not measured, else passed."""
    if any(r is False for r in gate_results):
        return "failed"
    return "incomplete" if any(r is None for r in gate_results) else "passed"


def run(ctx, work: Path, force: bool = False) -> list[Artifact]:
    from edgeft.data.loading import read_split

    facts = ctx.facts()
    labels, task = facts.labels, facts.task
    test = read_split(ctx.require("finetune.splits"), "test")
    y = np.array([float(e.label) for e in test] if task == "regression" else [labels.index(e.label) for e in test])
    base_out = np.load(ctx.require("finetune.baseline_test_logits"))
    base = score(base_out, y, base_out, task)
    specs = [load_target(t) for t in ctx.config.targets]
    host = hostinfo.current()                     # read once: every ISA note and the report's host use it
    rows, notes, artifacts = [], [], []
    collapsed = collapsed_baseline(base_out, y, labels) if task == "classification" else None
    if collapsed:
        ctx.log(f"verify: warning: {collapsed}")
        notes.append(collapsed)
    (work / "predictions").mkdir()
    for spec in specs:
        for role in ROLES:
            d = ctx.require("compile.engine", target=spec.name, role=role)
            ctx.log(f"verify: {spec.name}/{role}: {len(test)} test examples at batch 1")
            times: list[float] = []
            logits = predict(d, [e.text for e in test], ctx.config.train.max_length, times)
            np.save(work / "predictions" / f"{spec.name}-{role}.npy", logits)
            artifacts.append(Artifact(f"predictions/{spec.name}-{role}.npy", "predictions/engine-test", NAME,
                                      parents=[f"compile/{spec.name}/{role}/model.onnx"], target=spec.name))
            meta = read_json(d / "engine.json")
            rows.append({"target": spec.name, "role": role, "backend": meta["backend"], "precision": meta["precision"],
                         "deferred": bool(meta.get("deferred")), "runtime": meta.get("runtime", meta["backend"]),
                         "path": f"compile/{spec.name}/{role}", **score(logits, y, base_out, task),
                         "size_bytes": (d / meta["file"]).stat().st_size, "where_it_ran": meta["where_it_ran"],
                         "latency_shape": latency_shapes(d, spec), "test_split_latency_ms": split_latency(times),
                         "_spec": spec, "_dir": d})
        note = host_isa_note(spec, host)
        if note:
            notes.append(f"{spec.name}: {note}")
        for row in rows[-len(ROLES):]:
            row["_unmeasured"] = ("no engine was built here (deferred build kit)" if row["deferred"] else
                                  f"this host's int8 ISA class is {host.isa_class}, the target's {spec.device.isa}"
                                  if note else None)
        if rows[-1]["deferred"]:
            notes.append(f"{spec.name}: {spec.backend} is not installed here, so no engine was built: compile/{spec.name}/ "
                         "holds deferred build kits (run build_engine.py on the device). Accuracy and agreement above "
                         "are of the kit's ONNX through ONNX Runtime; latency was not measured.")
    _latencies(ctx, rows)
    report = _assemble(ctx, rows, base, len(test), notes, task, host)
    write_json_atomic(work / "report.json", report)
    write_text_atomic(work / "report.md", render_markdown(report))
    return artifacts + [Artifact("report.json", "report/json", NAME), Artifact("report.md", "report/markdown", NAME)]


def _latencies(ctx, rows: list[dict]) -> None:
    """Interleave: round r measures every engine once, each in a fresh process."""
    timed = [i for i, row in enumerate(rows) if not row["deferred"]]
    samples: dict[int, list[dict]] = {i: [] for i in timed}
    for r in range(LATENCY_ROUNDS if timed else 0):
        for i in timed:
            samples[i].append(measure_latency(rows[i]["_dir"], rows[i]["_spec"]))
        ctx.log(f"verify: latency round {r + 1}/{LATENCY_ROUNDS} done")
    for i, row in enumerate(rows):
        row["latency_ms"] = ({k: float(np.median([s[k] for s in samples[i]])) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")}
                             if i in samples else None)
        row["load_s"] = float(np.median([s["load_s"] for s in samples[i]])) if i in samples else None


def score(outputs: np.ndarray, y: np.ndarray, base_out: np.ndarray, task: str) -> dict:
    """Classification: accuracy and top-1 agreement with the baseline. Regression: RMSE and the mean
    absolute difference from the baseline's outputs (accuracy and agreement are None)."""
    if task == "regression":
        out, ref = outputs.reshape(-1), base_out.reshape(-1)
        return {"accuracy": None, "top1_agreement": None, "rmse": float(np.sqrt(np.mean((out - y) ** 2))),
                "mean_abs_diff_vs_baseline": float(np.mean(np.abs(out - ref)))}
    pred = outputs.argmax(-1)
    return {"accuracy": float((pred == y).mean()), "top1_agreement": float((pred == base_out.argmax(-1)).mean())}


def collapsed_baseline(logits: np.ndarray, y: np.ndarray, labels: list[str], share: float = 0.9) -> str | None:
    """Why the proof is weak when the FP32 baseline answers one class for most of the test split though the
    labels are not that lopsided (an undertrained or collapsed model): an engine agreeing with it passes every
    gate and proves little. None when the baseline spreads its answers like the labels do."""
    if len(y) == 0 or logits.ndim != 2:
        return None
    pred = logits.argmax(-1)
    top = int(np.bincount(pred, minlength=len(labels)).argmax())
    pred_share = float((pred == top).mean())
    label_share = float(np.bincount(y.astype(int), minlength=len(labels)).max() / len(y))
    if pred_share < share or label_share >= share:
        return None
    return (f"the FP32 baseline answers {labels[top]!r} for {pred_share:.0%} of the test split, whose most common "
            f"label is {label_share:.0%} of it: the model did not learn the task, so gates measured against it "
            "prove little (train longer, check the labels, or raise --lr)")


def _assemble(ctx, rows: list[dict], base: dict, n_test: int, notes: list[str], task: str, host) -> dict:
    fp32 = {r["target"]: r["latency_ms"]["p50_ms"] for r in rows if r["role"] == "fp32-reference" and r["latency_ms"]}
    for row in rows:
        row["accuracy_delta"] = row["accuracy"] - base["accuracy"] if task == "classification" else None
        if task == "regression":
            row["rmse_delta"], row["_base_rmse"] = row["rmse"] - base["rmse"], base["rmse"]
        ref = fp32.get(row["target"])
        row["latency_ratio_vs_fp32"] = row["latency_ms"]["p50_ms"] / ref if row["latency_ms"] and ref else None
        spec = row.pop("_spec")
        row.pop("_dir")
        unmeasured = row.pop("_unmeasured", None)
        row["gates"] = _gates(spec, row, unmeasured) if row["role"] == "engine" else []
        row.pop("_base_rmse", None)
        row["verdict"] = verdict([g["passed"] for g in row["gates"]])
        row["passed"] = row["verdict"] == "passed"
    return {
        "schema_version": REPORT_SCHEMA_VERSION, "run_dir": str(ctx.run_dir), "test_examples": n_test,
        "host": _host(host),
        "latency_rounds": LATENCY_ROUNDS,
        "task": task, "metric": "rmse" if task == "regression" else "accuracy",
        "baseline": {"name": "pytorch-fp32", "accuracy": base["accuracy"], **({"rmse": base["rmse"]} if task == "regression" else {})},
        "engines": rows, "notes": notes, "verdict": (v := verdict([g["passed"] for r in rows for g in r["gates"]])),
        "passed": v == "passed",
    }


def _host(h) -> dict:
    return {"cpu": h.cpu, "cores": os.cpu_count(), "platform": platform.platform(), "isa_class": h.isa_class,
            "isa_flags": h.isa_summary()}
