"""Per-device benchmarking: engines side by side over a sweep of batch × sequence × threads.

Every measurement runs in a fresh process (``bench_worker``); round r measures every point of every engine
once, in that order, so drift (thermal, other load) spreads over all engines alike. Reported per engine ×
point: the median over rounds of each round's p50/p90/p99/mean/std, throughput, session load time, cold
start (process start to first result, median over rounds), peak RSS, GPU memory where there is a GPU, file
size, and the coefficient of variation of the round p50s, with a warning above ``cv_warn`` (as pyperf and
trtexec warn) instead of a silent number. With inputs and labels, accuracy and top-1 agreement per batch
size, each batch padded to its longest input.

``edgeft bench`` (a run directory) and ``edgeft-runtime bench`` (a bundle, on the device) both end here.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeft_runtime.errors import EdgeftError

BENCH_SCHEMA_VERSION = 1
SWEEP_KEYS = ("batch", "seq", "threads")


@dataclass
class EngineSpec:
    name: str
    kind: str                       # engine_dir | onnx | openvino | adapter (see bench_worker.open_engine)
    path: str
    preprocessor_dir: str | None = None     # tokenizer.json / preprocessor.json for the accuracy pass
    file_bytes: int | None = None
    limits: dict | None = None      # {"batch": [min, max], "seq": [min, max]} the engine accepts
    note: str = ""
    extra: dict = field(default_factory=dict)    # optimization, adapter
    caveat: str = ""                # why its outputs on this host are not its outputs on its device; marks its rows

    def request(self) -> dict:
        return {"name": self.name, "kind": self.kind, "path": self.path, **self.extra}


@dataclass
class BenchSettings:
    sweep: dict[str, list[int]]
    rounds: int = 3
    warmup_s: float = 0.3
    duration_s: float = 1.0
    min_iters: int = 10
    max_iters: int = 2000
    cv_warn: float = 0.05
    modality: str = "text"
    image_size: int | None = None
    max_length: int | None = None


def parse_sweep(items: list[str], defaults: dict[str, list[int]]) -> dict[str, list[int]]:
    """``batch=1,8`` ``seq=32,128`` ``threads=1,2`` -> {key: values}; every key gets a default."""
    out, given = dict(defaults), set()
    for item in items:
        key, _, values = item.partition("=")
        key = key.strip()
        if key not in SWEEP_KEYS or not values:
            raise EdgeftError(f"--sweep {item!r}: expected KEY=V1,V2 with KEY one of {', '.join(SWEEP_KEYS)}",
                              fix="e.g. --sweep batch=1,8,32 --sweep seq=32,128")
        try:
            vals = [int(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise EdgeftError(f"--sweep {item!r}: values must be whole numbers", fix="e.g. --sweep batch=1,8") from None
        if not vals or min(vals) < (0 if key == "threads" else 1):
            raise EdgeftError(f"--sweep {item!r}: values must be at least {0 if key == 'threads' else 1}",
                              fix="e.g. --sweep batch=1,8 (threads=0 is the runtime's default)")
        seen = out[key] if key in given else []      # a repeated key adds its values: batch=1 batch=8 is batch=1,8
        given.add(key)
        out[key] = sorted(set(seen) | set(vals))
    return out


def check_limits(engines: list[EngineSpec], sweep: dict[str, list[int]]) -> None:
    """Refuse a point outside an engine's accepted shapes, naming the range."""
    for e in engines:
        for key in ("batch", "seq"):
            lo, hi = (e.limits or {}).get(key, (None, None))
            bad = [v for v in sweep.get(key) or [] if v is not None and ((lo and v < lo) or (hi and v > hi))]
            if bad:
                raise EdgeftError(f"--sweep {key}={bad[0]} is outside what {e.name} accepts ({key} {lo}..{hi})",
                                  fix=f"sweep {key} within {lo}..{hi} (the target's input_shapes min/max)")


def check_settings(s: "BenchSettings") -> list[str]:
    """What the numbers cannot show with these settings, said next to them: more intra-op threads than cores
    measures contention, not the engine; one round has no spread to judge noise by."""
    cores = os.cpu_count() or 1
    over = [t for t in s.sweep.get("threads") or [] if t and t > cores]
    out = [f"--sweep threads={','.join(map(str, over))}: more threads than this host's {cores} cores; those points "
           "measure the threads competing for cores"] if over else []
    if s.rounds < 2:
        out.append("one round: its noise (round CV) is not known, and `bench compare` gives no verdict on it; "
                   "use --rounds 3 or more for numbers to compare")
    return out


def prepare_out(out: Path, inside: list[tuple[Path, str]] = (), bench: bool = False) -> Path:
    """``out`` created and writable before any measuring; refused inside any of ``inside`` (a run directory or a
    bundle, whose files edgeft checks and which must not gain files it did not write); with ``bench``, refused
    when it holds files other than a previous bench's outputs."""
    out = Path(out).resolve()
    for root, allowed in inside:
        root = Path(root).resolve()
        if out == root or root in out.parents:
            rel = out.relative_to(root).parts
            if not (allowed and rel and rel[0] == allowed):
                where = f"{root}/{allowed}" if allowed else "a folder outside it"
                raise EdgeftError(f"--out {out} is inside {root}, which holds only what edgeft wrote there",
                                  fix=f"pass --out {where}")
    if out.exists() and not out.is_dir():
        raise EdgeftError(f"--out {out} is a file", fix="pass --out a folder")
    if bench and out.is_dir():
        _check_reusable(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".edgeft-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise EdgeftError(f"--out {out} cannot be written ({e.strerror or e})", fix="pass --out a folder you can write") from None
    if bench:
        (out / "bench.log").unlink(missing_ok=True)      # this bench's log only, not a previous one's
    return out


OUTPUT_FILES = ("bench.json", "bench.md", "bench.csv", "bench.log")
PLOT_FILES = ("latency_vs_batch.png", "throughput_vs_batch.png", "latency_vs_seq.png", "rounds.png",
              "accuracy_vs_latency.png")


def _check_reusable(out: Path) -> None:
    """A folder ``bench`` may write into: empty, or a previous bench's outputs (replaced as a whole), never a
    folder holding files of the user's, which a bench would overwrite or leave mixed with its own."""
    present = {p.name for p in out.iterdir()} - {".work"}
    if not present:
        return
    foreign = sorted(present - set(OUTPUT_FILES) - set(PLOT_FILES))
    previous = (out / "bench.json").is_file() and _is_bench_doc(out / "bench.json")
    crashed = present == {"bench.log"}       # a bench killed before it wrote anything but its log
    if foreign or not (previous or crashed):
        shown = foreign or sorted(present)
        raise EdgeftError(f"--out {out} holds files `bench` did not write ({', '.join(shown[:5])}"
                          f"{', ...' if len(shown) > 5 else ''})",
                          fix="pass --out a new or empty folder (a previous bench's folder is fine: its outputs are replaced)")


def _is_bench_doc(path: Path) -> bool:
    from edgeft_runtime.schema import BENCH_SCHEMA, problems

    try:
        return not problems(json.loads(path.read_text(encoding="utf-8")), BENCH_SCHEMA)
    except (OSError, ValueError):
        return False


def host_facts() -> dict:
    """CPU model, ISA flags and class, cores, governor; on Jetson the power mode and temperatures."""
    import platform

    from edgeft_runtime import hostinfo

    h = hostinfo.current()
    facts: dict[str, Any] = {"cpu": h.cpu, "machine": h.machine, "isa_class": h.isa_class, "isa_flags": h.isa_summary(),
                             "cores": os.cpu_count(), "os": platform.system(), "python": platform.python_version()}
    gov = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    facts["governor"] = gov.read_text().strip() if gov.is_file() else None
    model = Path("/proc/device-tree/model")
    if model.is_file() and "jetson" in model.read_text(errors="ignore").lower():
        facts["device_model"] = model.read_text(errors="ignore").strip("\x00\n ")
        facts["jetson"] = _jetson_facts()
    return facts


def _jetson_facts() -> dict:
    out: dict[str, Any] = {}
    try:
        r = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=10)
        out["power_mode"] = r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        out["power_mode"] = None
    temps = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        try:
            temps[(zone / "type").read_text().strip()] = int((zone / "temp").read_text()) / 1000
        except (OSError, ValueError):
            continue
    out["temperatures_c"] = temps
    return out


def versions() -> dict:
    from importlib import metadata

    out = {}
    for name in ("onnxruntime", "onnxruntime-gpu", "openvino", "torch", "tensorrt", "numpy", "edgeft", "edgeft-runtime"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _worker(req: dict, timeout: float = 1800) -> tuple[dict, float | None]:
    """Run one worker; returns its JSON and the cold start (process start to first result) in seconds. stderr
    goes to a file (a pipe read only at the end could fill and stall the worker); a worker past ``timeout`` is
    killed. ``-I``: the worker imports nothing from the current folder or PYTHON* variables."""
    import threading

    cmd = [sys.executable, "-I", "-W", "ignore", "-m", "edgeft_runtime.bench_worker", json.dumps(req)]
    what = f"benchmark of {req['engine']['name']} at batch {req['batch']} seq {req.get('seq')}"
    with tempfile.TemporaryFile(mode="w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        first, lines = None, []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip() == "FIRST" and first is None:
                    first = time.perf_counter() - t0
                else:
                    lines.append(line)
            code = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
        err.seek(0)
        tail = err.read()[-2000:]
    if code != 0 or not lines:
        why = f"it ran past {timeout:.0f} s and was stopped" if code in (-9, 137) else tail
        raise EdgeftError(f"{what} failed:\n{why}", fix="run it alone with --engines NAME to see the full error")
    try:
        return json.loads(lines[-1]), first
    except ValueError:
        raise EdgeftError(f"{what} printed no result ({lines[-1][:200]!r})", fix="run it alone with --engines NAME") from None


def points(sweep: dict[str, list[int]]) -> list[dict]:
    return [dict(zip(SWEEP_KEYS, p)) for p in itertools.product(*(sweep.get(k) or [None] for k in SWEEP_KEYS))]


def measure(engines: list[EngineSpec], s: BenchSettings, progress: Callable[[str, int, int], None] | None = None) -> tuple[list[dict], list[str]]:
    """Interleaved rounds over every engine × point; returns the result records and the warnings."""
    grid = points(s.sweep)
    samples: dict[tuple, list[dict]] = {}
    total, done = s.rounds * len(grid) * len(engines), 0
    for r in range(s.rounds):
        for pt in grid:
            for e in engines:
                req = {"mode": "time", "engine": e.request(), "batch": pt["batch"], "seq": pt["seq"],
                       "threads": pt["threads"] or 0, "warmup_s": s.warmup_s, "duration_s": s.duration_s,
                       "min_iters": s.min_iters, "max_iters": s.max_iters, "image_size": s.image_size}
                res, first = _worker(req)
                res["cold_start_s"] = first
                samples.setdefault((e.name, pt["batch"], pt["seq"], pt["threads"]), []).append(res)
                done += 1
                if progress:
                    progress(f"round {r + 1}/{s.rounds}: {e.name} batch {pt['batch']}"
                             + (f" seq {pt['seq']}" if pt["seq"] else "") + (f" threads {pt['threads']}" if pt["threads"] else ""),
                             done, total)
    results, warnings = [], []
    sizes = {e.name: e.file_bytes for e in engines}
    for (name, batch, seq, threads), runs in samples.items():
        med = {k: float(np.median([x[k] for x in runs])) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "load_s")}
        p50s = [x["p50_ms"] for x in runs]
        cv = float(np.std(p50s) / np.mean(p50s)) if len(p50s) > 1 and np.mean(p50s) > 0 else None   # one round: unknown
        colds = [x["cold_start_s"] for x in runs if x.get("cold_start_s") is not None]
        rss = [x["peak_rss_mb"] for x in runs if x.get("peak_rss_mb") is not None]
        gpu = [x["gpu_memory_mb"] for x in runs if x.get("gpu_memory_mb") is not None]
        rec = {"engine": name, "batch": batch, "seq": seq, "threads": threads, **med,
               "throughput": batch * 1000.0 / med["mean_ms"] if med["mean_ms"] > 0 else None,
               "cold_start_s": float(np.median(colds)) if colds else None,
               "peak_rss_mb": max(rss) if rss else None, "gpu_memory_mb": max(gpu) if gpu else None,
               "file_bytes": sizes.get(name), "iters": int(np.median([x["iters"] for x in runs])),
               "rounds_p50_ms": p50s, "round_cv": cv, "warnings": []}
        if "runtime_precisions" in runs[0]:
            rec["runtime_precisions"] = runs[0]["runtime_precisions"]
        if cv is not None and cv > s.cv_warn:
            msg = (f"{name} batch {batch} seq {seq} threads {threads}: p50 varies {cv:.1%} between rounds (over "
                   f"{s.cv_warn:.0%}): the host was busy or throttling; close other work, fix the CPU governor, "
                   "or add --rounds")
            rec["warnings"].append(msg)
            warnings.append(msg)
        results.append(rec)
    return results, warnings


def accuracy(engines: list[EngineSpec], s: BenchSettings, inputs: list, labels: list[int] | None,
             baseline_logits: np.ndarray | None, progress=None, reference: str | None = None) -> list[dict]:
    """Accuracy and top-1 agreement per engine × batch size, batches padded to their longest input. Agreement
    is with ``baseline_logits`` (the FP32 model's), or without them with engine ``reference`` at the smallest
    batch. Engines without a pre-processor folder are skipped."""
    preds: dict[tuple[str, int], np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="edgeft-bench-") as tmp:
        data = Path(tmp) / "inputs.json"
        data.write_text(json.dumps(inputs), encoding="utf-8")
        for e in engines:
            if not e.preprocessor_dir:
                continue
            for batch in s.sweep["batch"]:
                req = {"mode": "predict", "engine": e.request(), "batch": batch, "threads": 0,
                       "inputs_file": str(data), "preprocessor_dir": e.preprocessor_dir, "max_length": s.max_length}
                res, _ = _worker(req)
                preds[(e.name, batch)] = np.asarray(res["logits"]).argmax(-1)
                if progress:
                    progress(f"accuracy: {e.name} batch {batch}", 0, 0)
    base, against = None, None
    if baseline_logits is not None:
        base, against = np.asarray(baseline_logits).argmax(-1), "fp32-baseline"
    elif reference is not None and (reference, min(s.sweep["batch"])) in preds:
        base, against = preds[(reference, min(s.sweep["batch"]))], reference
    y = np.asarray(labels) if labels is not None else None
    return [{"engine": name, "batch": batch, "examples": len(inputs),
             "accuracy": float((p == y).mean()) if y is not None else None,
             "top1_agreement": float((p == base).mean()) if base is not None else None, "agreement_with": against}
            for (name, batch), p in preds.items()]


def document(engines: list[EngineSpec], s: BenchSettings, results: list[dict], warnings: list[str],
             acc: list[dict], source: dict, notes: list[str] | None = None) -> dict:
    return {"schema_version": BENCH_SCHEMA_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "source": source, "host": host_facts(), "versions": versions(),
            "settings": {"sweep": s.sweep, "rounds": s.rounds, "warmup_s": s.warmup_s, "duration_s": s.duration_s,
                         "min_iters": s.min_iters, "cv_warn": s.cv_warn,
                         "statistic": "median over rounds of each round's percentile; every measurement in a fresh process"},
            "engines": [{"name": e.name, "kind": e.kind, "file_bytes": e.file_bytes, "note": e.note,
                         **({"caveat": e.caveat} if e.caveat else {})} for e in engines],
            "results": results, "accuracy": acc, "warnings": warnings, "notes": notes or []}


# outputs --------------------------------------------------------------------------------------------------

CSV_FIELDS = ("engine", "batch", "seq", "threads", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "throughput",
              "load_s", "cold_start_s", "peak_rss_mb", "gpu_memory_mb", "file_bytes", "iters", "round_cv",
              "host_cpu", "host_isa_class", "host_cores", "created")


def _fmt(v, digits=3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def caveat_marks(doc: dict) -> dict[str, str]:
    """`` ⚠`` after the name of each engine whose accuracy here is not its accuracy on its device."""
    return {e["name"]: " ⚠" for e in doc["engines"] if e.get("caveat")}


def render_markdown(doc: dict) -> str:
    h = doc["host"]
    lines = [f"# Benchmark: {doc['source'].get('name', '')}", "",
             f"Host: **{h['cpu']}** ({h['machine']}, {h['cores']} cores, ISA class {h['isa_class']}: {h['isa_flags']}"
             f"{', governor ' + h['governor'] if h.get('governor') else ''}). Versions: "
             + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()) + ".",
             f"Each number: median over {doc['settings']['rounds']} interleaved rounds, every engine in a fresh process. "
             f"{doc['created']}.", ""]
    engines = [e["name"] for e in doc["engines"]]
    by_point: dict[tuple, list[dict]] = {}
    for r in doc["results"]:
        by_point.setdefault((r["batch"], r["seq"], r["threads"]), []).append(r)
    lines += ["| batch | seq | threads | engine | p50 ms | p90 ms | p99 ms | items/s | × first | load s | cold start s | peak RSS MB | size MB | round CV |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (b, sq, t), rows in sorted(by_point.items(), key=lambda kv: tuple(x or 0 for x in kv[0])):
        rows = sorted(rows, key=lambda r: engines.index(r["engine"]) if r["engine"] in engines else 99)
        first = rows[0]["p50_ms"]
        for r in rows:
            lines.append(f"| {b} | {_fmt(sq)} | {t if t else 'default'} | {r['engine']} | {_fmt(r['p50_ms'])} | {_fmt(r['p90_ms'])} | "
                         f"{_fmt(r['p99_ms'])} | {_fmt(r['throughput'])} | {r['p50_ms'] / first:.2f} | {_fmt(r['load_s'])} | "
                         f"{_fmt(r['cold_start_s'])} | {_fmt(r['peak_rss_mb'])} | "
                         f"{_fmt(r['file_bytes'] / 1e6 if r['file_bytes'] else None)} | "
                         f"{'—' if r['round_cv'] is None else format(r['round_cv'], '.1%')}{' ⚠' if r['warnings'] else ''} |")
    if doc["accuracy"]:
        on = f" on {doc['accuracy'][0]['inputs']}" if doc["accuracy"][0].get("inputs") else ""
        lines += ["", f"## Accuracy per batch size{on} (each batch padded to its longest input)", "",
                  "| engine | batch | accuracy | top-1 agreement with FP32 | examples |", "|---|---|---|---|---|"]
        caveats = caveat_marks(doc)
        for a in doc["accuracy"]:
            lines.append(f"| {a['engine']}{caveats.get(a['engine'], '')} | {a['batch']} | {_fmt(a['accuracy'], 4)} | "
                         f"{_fmt(a['top1_agreement'], 4)} | {a['examples']} |")
        lines += [f"\n⚠ {e['name']}: {e['caveat']}" for e in doc["engines"] if e.get("caveat")]
    notes = [f"- {e['name']}: {e['note']}" for e in doc["engines"] if e.get("note")] + [f"- {n}" for n in doc.get("notes", [])]
    if notes:
        lines += ["", "## Engines", "", *notes]
    if doc["warnings"]:
        lines += ["", "## Warnings", "", *[f"- {w}" for w in doc["warnings"]]]
    return "\n".join(lines) + "\n"


def write_csv(doc: dict, path: Path) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        h = doc["host"]
        where = {"host_cpu": h["cpu"].strip(), "host_isa_class": h["isa_class"], "host_cores": h["cores"],
                 "created": doc["created"]}
        for r in doc["results"]:      # threads 0 = the runtime's default, as in bench.json
            w.writerow({**r, **where})


def write_plots(doc: dict, out: Path) -> list[str]:
    """PNG plots with matplotlib (absent on a small device: then none, and the caller says so)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    results = doc["results"]
    engines = [e["name"] for e in doc["engines"]]
    h = doc["host"]
    where = f"{h['cpu'].strip()} [{h['isa_class']}], {h['cores']} cores · {doc['created']}"

    def save(fig, fname: str) -> None:
        fig.text(0.01, 0.005, where, fontsize=7, color="0.4", va="bottom")    # a plot travels without its bench.json
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        made.append(fname)

    def line_plot(xkey: str, fixed: dict, ykey: str, ylabel: str, fname: str, title: str) -> None:
        if len(doc["settings"]["sweep"].get(xkey) or []) < 2:      # one value is a point, not a line
            return
        fig, ax = plt.subplots(figsize=(7, 4.5))
        drawn = False
        for name in engines:
            rows = sorted((r for r in results if r["engine"] == name and all(r[k] == v for k, v in fixed.items())),
                          key=lambda r: r[xkey] or 0)
            if len(rows) >= 1 and rows[0][xkey] is not None:
                ax.plot([r[xkey] for r in rows], [r[ykey] for r in rows], marker="o", label=name)
                drawn = True
        if not drawn:
            plt.close(fig)
            return
        ax.set_xlabel(xkey)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, fname)

    sweep = doc["settings"]["sweep"]
    seq0 = (sweep.get("seq") or [None])[0]
    batch0 = sweep["batch"][0]
    threads0 = (sweep.get("threads") or [None])[0]
    line_plot("batch", {"seq": seq0, "threads": threads0}, "p50_ms", "p50 latency (ms)", "latency_vs_batch.png",
              f"p50 vs batch (seq {seq0}, threads {threads0 or 'default'})")
    line_plot("batch", {"seq": seq0, "threads": threads0}, "throughput", "items / s", "throughput_vs_batch.png",
              f"throughput vs batch (seq {seq0}, threads {threads0 or 'default'})")
    if seq0 is not None:
        line_plot("seq", {"batch": batch0, "threads": threads0}, "p50_ms", "p50 latency (ms)", "latency_vs_seq.png",
                  f"p50 vs sequence length (batch {batch0}, threads {threads0 or 'default'})")
    # round p50s per engine at the first point: how far apart the rounds are
    fig, ax = plt.subplots(figsize=(7, 4.5))
    first = [r for r in results if r["batch"] == batch0 and r["seq"] == seq0 and r["threads"] == threads0]
    for i, r in enumerate(sorted(first, key=lambda r: engines.index(r["engine"]) if r["engine"] in engines else 99)):
        ax.scatter([i] * len(r["rounds_p50_ms"]), r["rounds_p50_ms"], s=18)
    ax.set_xticks(range(len(first)))
    ax.set_xticklabels([r["engine"] for r in first], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("p50 of each round (ms)")
    ax.set_title(f"rounds at batch {batch0}, seq {seq0}")
    save(fig, "rounds.png")
    if doc["accuracy"]:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for a in doc["accuracy"]:
            lat = next((r["p50_ms"] for r in results if r["engine"] == a["engine"] and r["batch"] == a["batch"]
                        and r["seq"] == seq0 and r["threads"] == threads0), None)
            if lat is not None and a["accuracy"] is not None:
                ax.scatter(lat, a["accuracy"], s=30)
                ax.annotate(f"{a['engine']} b{a['batch']}", (lat, a["accuracy"]), fontsize=7)
        ax.set_xlabel(f"p50 latency (ms) at seq {seq0}")
        ax.set_ylabel("accuracy")
        ax.set_title("accuracy vs latency")
        ax.grid(alpha=0.3)
        save(fig, "accuracy_vs_latency.png")
    return made


def write_outputs(doc: dict, out: Path) -> list[str]:
    from edgeft_runtime.fileio import write_json_atomic, write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(doc, out)
    doc["plots"] = plots
    write_json_atomic(out / "bench.json", doc)
    write_text_atomic(out / "bench.md", render_markdown(doc))
    write_csv(doc, out / "bench.csv")
    for stale in set(PLOT_FILES) - set(plots):     # a previous bench's plot this sweep does not draw
        (out / stale).unlink(missing_ok=True)
    return ["bench.json", "bench.md", "bench.csv", *plots]


# compare --------------------------------------------------------------------------------------------------

def compare(old: dict, new: dict, threshold: float = 0.05, resamples: int = 2000, seed: int = 0) -> list[dict]:
    """Per engine × point in both runs: the ratio of NEW's to OLD's median round p50, and a 95% bootstrap
    interval of that ratio (round p50s of each run resampled with replacement, the ratio of the resampled
    medians). ``regressed`` when the whole interval lies above 1 + threshold: slower beyond both runs' noise;
    no verdict (``judged`` false) where either run has a single round."""
    rng = np.random.default_rng(seed)
    key = lambda r: (r["engine"], r["batch"], r["seq"], r["threads"])  # noqa: E731
    olds = {key(r): r for r in old["results"]}
    rows = []
    for r in new["results"]:
        o = olds.get(key(r))
        if o is None:
            continue
        a, b = np.asarray(o["rounds_p50_ms"], float), np.asarray(r["rounds_p50_ms"], float)
        if np.median(a) <= 0 or np.median(b) <= 0:       # a timer that read zero: nothing to compare
            continue
        ratio = float(np.median(b) / np.median(a))
        boot = np.median(rng.choice(b, (resamples, len(b))), 1) / np.median(rng.choice(a, (resamples, len(a))), 1)
        lo, hi = (float(x) for x in np.percentile(boot, [2.5, 97.5]))
        judged = len(a) >= 2 and len(b) >= 2     # one round has no spread: its interval is a point, not noise
        rows.append({"engine": r["engine"], "batch": r["batch"], "seq": r["seq"], "threads": r["threads"],
                     "old_p50_ms": float(np.median(a)), "new_p50_ms": float(np.median(b)), "ratio": ratio,
                     "ci95": [lo, hi], "judged": judged,
                     "regressed": judged and lo > 1 + threshold, "improved": judged and hi < 1 - threshold})
    return rows


def load_bench(path: Path) -> dict:
    path = Path(path)
    if path.is_dir():       # the --out folder of a bench
        if not (path / "bench.json").is_file():
            raise EdgeftError(f"{path} is a folder without a bench.json", fix="pass a bench.json, or the --out folder of a bench")
        path = path / "bench.json"
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EdgeftError(f"{path}: no such file", fix="pass the bench.json two `bench` runs wrote") from None
    except ValueError as e:
        raise EdgeftError(f"{path} is not JSON ({e})", fix="pass a bench.json") from None
    from edgeft_runtime.schema import BENCH_SCHEMA, problems

    found = problems(doc, BENCH_SCHEMA)
    if found:
        raise EdgeftError(f"{path} is not a bench.json: " + "; ".join(found[:5]), fix="pass the bench.json `bench` wrote")
    return doc


# the device command ---------------------------------------------------------------------------------------

def _at_least(lo: float, kind=float):
    import argparse

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{text} is below {lo}")
        return v
    return parse


def add_arguments(p) -> None:
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                   help="batch=..., seq=..., threads=... (a grid); default: the bundle's opt shape")
    p.add_argument("--rounds", type=_at_least(1, int), default=3)
    p.add_argument("--duration", type=_at_least(0), default=1.0, help="seconds timed per measurement (at least 10 runs)")
    p.add_argument("--warmup", type=_at_least(0), default=0.3, help="seconds of warm-up per measurement")
    p.add_argument("--cv-warn", type=_at_least(0), default=0.05, help="warn when round p50s vary more than this")
    p.add_argument("--no-accuracy", action="store_true", help="skip accuracy per batch size on the golden set")
    p.add_argument("--out", type=Path, default=None, help="folder for bench.json/.md/.csv (default: ./bench-<bundle>; "
                   "never inside the bundle)")
    p.add_argument("--json", action="store_true", help="print bench.json only")


def bundle_engines(bundle) -> list[EngineSpec]:
    m = bundle.meta
    limits = _limits(m["inputs"], m["modality"])
    engine_dir = bundle.engine_dir
    if m["target"]["backend"] == "tensorrt" and m["engine"]["deferred"]:
        from edgeft_runtime.trt_device import build_from_kit

        engine_dir = build_from_kit(bundle)
    model = engine_dir / json.loads((engine_dir / "engine.json").read_text())["file"]
    names = {"input_names": [i["name"] for i in m["inputs"]]}
    fit = bundle.host_fit()
    engines = [EngineSpec(f"edgeft-{m['target']['precision']}", "engine_dir", str(engine_dir), str(bundle.engine_dir),
                          model.stat().st_size, limits, extra=names,
                          caveat=fit[1] if fit and fit[0] == "refuse" else "")]
    if m.get("reference"):
        ref = bundle.root / m["reference"]["dir"]
        engines.append(EngineSpec("edgeft-fp32-reference", "engine_dir", str(ref), str(ref),
                                  (bundle.root / m["reference"]["model_file"]).stat().st_size, limits))
    return engines


def _limits(inputs: list[dict], modality: str) -> dict:
    first = inputs[0]
    out = {"batch": [first["min"][0], first["max"][0]]} if first.get("min") else {}
    if modality == "text" and first.get("min") and len(first["min"]) > 1:
        out["seq"] = [first["min"][1], first["max"][1]]
    return out


def bench_bundle(bundle, sweep_items: list[str], settings_kw: dict, out: Path | None, with_accuracy: bool,
                 progress=None) -> tuple[dict, Path]:
    """What ``edgeft-runtime bench`` and ``edgeft bench BUNDLE`` both run: the bundle's engines over the sweep,
    accuracy per batch size on its golden set; every input checked before anything is timed; an output folder
    made for a bench that fails is removed."""
    import shutil

    m = bundle.meta
    opt = m["inputs"][0].get("opt") or [1, 128]
    image = m["modality"] == "image"
    sweep = parse_sweep(sweep_items, {"batch": [opt[0]], "seq": [None] if image else [opt[1]], "threads": [0]})
    if image and sweep["seq"] != [None]:
        raise EdgeftError("--sweep seq=... does not apply to an image bundle", fix="sweep batch and threads only")
    settings = BenchSettings(sweep=sweep, modality=m["modality"], max_length=m["preprocessing"].get("max_length"),
                             image_size=opt[-1] if image else None, **settings_kw)
    check_limits([EngineSpec(f"edgeft-{m['target']['precision']}", "engine_dir", "",
                             limits=_limits(m["inputs"], m["modality"]))], sweep)
    target = Path(out or f"bench-{m['name']}")
    existed = target.exists()
    out = prepare_out(target, [(bundle.root, "")], bench=True)
    try:
        engines = bundle_engines(bundle)
        results, warnings = measure(engines, settings, progress)
        warnings = check_settings(settings) + warnings
        acc = []
        if with_accuracy and m["task"] == "classification" and m["golden"]["count"]:
            rows = [json.loads(x) for x in (bundle.root / m["golden"]["inputs"]).read_text(encoding="utf-8").splitlines()
                    if x.strip()]
            expected = json.loads((bundle.root / m["golden"]["expected"]).read_text(encoding="utf-8"))
            labels = [m["labels"].index(r["label"]) if r.get("label") in m["labels"] else -1 for r in rows]
            acc = accuracy(engines, settings, bundle.golden_inputs(), labels,
                           np.asarray(expected["baseline_logits"]) if expected.get("baseline_logits") else None)
            for a in acc:
                a["inputs"] = "the bundle's golden set"
        notes = add_trtexec(results, engines, settings.image_size)
        doc = document(engines, settings, results, warnings, acc,
                       {"kind": "bundle", "name": m["name"], "version": m["version"], "target": m["target"]["name"]}, notes)
        write_outputs(doc, out)
    except BaseException:
        if not existed:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return doc, out


def run_cli(bundle, args) -> int:
    say = (lambda msg, done, total: print(f"[{done}/{total}] {msg}" if total else msg, file=sys.stderr, flush=True))
    doc, out = bench_bundle(bundle, args.sweep, {"rounds": args.rounds, "warmup_s": args.warmup,
                                                 "duration_s": args.duration, "cv_warn": args.cv_warn},
                            args.out, not args.no_accuracy, None if args.json else say)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(render_markdown(doc))
        print(f"wrote bench.json, bench.md, bench.csv{''.join(', ' + p for p in doc['plots'])} to {out}"
              + ("" if doc["plots"] else " (no plots: matplotlib is not installed)"), file=sys.stderr)
    for n in doc["notes"]:
        print(f"note: {n}", file=sys.stderr)
    for w in doc["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    return 0


# TensorRT: trtexec on the same engine ---------------------------------------------------------------------

TRTEXEC_INTERVALS = {"h2dMs": "h2d_ms", "computeMs": "compute_ms", "d2hMs": "d2h_ms", "latencyMs": "latency_ms"}


def parse_export_times(trace: list) -> dict:
    """Medians of the per-iteration intervals in trtexec's ``--exportTimes`` JSON (TensorRT 10's
    ``exportJSONTrace`` in samples/common/sampleReporting.cpp: h2dMs, computeMs, d2hMs, latencyMs, and the
    timestamps startH2dMs ... endD2hMs): host->device copy, compute (CUDA events around the enqueue),
    device->host copy, their sum, and end to end (first copy in to last copy out, as trtexec reports it)."""
    rows = [r for r in trace if isinstance(r, dict) and "computeMs" in r]
    if not rows:
        raise ValueError("no iterations with computeMs in the exportTimes trace")
    out = {"iterations": len(rows)}
    for src, dst in TRTEXEC_INTERVALS.items():
        vals = [float(r[src]) for r in rows if src in r]
        out[dst] = float(np.median(vals)) if vals else None
    ends = [float(r["endD2hMs"]) - float(r["startH2dMs"]) for r in rows if "endD2hMs" in r and "startH2dMs" in r]
    out["end_to_end_ms"] = float(np.median(ends)) if ends else None
    out["compute_p99_ms"] = float(np.percentile([float(r["computeMs"]) for r in rows], 99))
    return out


def trtexec_times(engine: Path, shapes: dict[str, list[int]], workdir: Path, duration_s: int = 3) -> dict | None:
    """Run trtexec (when it is on PATH) on ``engine`` at ``shapes``; None when there is no trtexec."""
    import shutil

    exe = shutil.which("trtexec")
    if exe is None:
        return None
    times = workdir / f"trtexec-{'-'.join('x'.join(map(str, v)) for v in shapes.values())}.json"
    spec = ",".join(f"{k}:{'x'.join(map(str, v))}" for k, v in shapes.items())
    cmd = [exe, f"--loadEngine={engine}", f"--shapes={spec}", f"--exportTimes={times}", "--warmUp=500",
           f"--duration={max(1, int(duration_s))}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return {"error": "trtexec did not finish in 10 minutes", "command": " ".join(cmd)}
    if proc.returncode != 0 or not times.is_file():
        return {"error": (proc.stdout + proc.stderr)[-500:], "command": " ".join(cmd)}
    try:
        return {**parse_export_times(json.loads(times.read_text())), "command": " ".join(cmd)}
    except (ValueError, OSError) as e:          # an unexpected trace must not cost the whole sweep
        return {"error": f"could not read trtexec's times: {e}", "command": " ".join(cmd)}


def add_trtexec(results: list[dict], engines: list[EngineSpec], image_size: int | None = None) -> list[str]:
    """For each TensorRT engine's point, trtexec's H2D / compute / D2H medians next to ours (users distrust a
    number that differs from trtexec's without an explanation: ours is end to end through Polygraphy's
    TrtRunner, host copies included). Returns notes for the report."""
    notes = []
    for e in engines:
        if e.kind != "engine_dir" or json.loads((Path(e.path) / "engine.json").read_text()).get("runtime") != "tensorrt":
            continue
        engine = Path(e.path) / "model.engine"
        workdir = Path(tempfile.mkdtemp(prefix="edgeft-trtexec-"))
        for r in (r for r in results if r["engine"] == e.name):
            shapes = ({"pixel_values": [r["batch"], 3, image_size, image_size]} if image_size else
                      {k: [r["batch"], r["seq"]] for k in e.extra.get("input_names", ("input_ids", "attention_mask", "token_type_ids"))})
            r["trtexec"] = trtexec_times(engine, shapes, workdir)
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
        if all(r.get("trtexec") is None for r in results if r["engine"] == e.name):
            notes.append(f"{e.name}: trtexec is not on PATH, so only the end-to-end TrtRunner time is shown")
    return notes
