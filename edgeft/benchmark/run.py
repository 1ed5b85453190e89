"""``edgeft bench``: pick the engines (a run directory's, or a bundle's), run the device runtime's benchmark
over them with a progress bar, print a rich table, and write bench.json/.md/.csv and the plots."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeft.errors import EdgeftError, GateFailed


@dataclass
class BenchOptions:
    sweep: list[str]
    engines: list[str] | None = None
    target: str | None = None
    data: Path | None = None
    accuracy: bool = True
    rounds: int = 3
    duration: float = 1.0
    warmup: float = 0.3
    cv_warn: float = 0.05
    out: Path | None = None
    quiet: bool = False


def _progress_measure(engines, settings, quiet: bool):
    from edgeft.console import CONSOLE
    from edgeft_runtime.bench import measure, points

    total = settings.rounds * len(points(settings.sweep)) * len(engines)
    if quiet:
        return measure(engines, settings)
    with CONSOLE.progress("bench: timing", total) as bar:
        return measure(engines, settings, lambda msg, done, tot: bar.update(done, tot, msg))


def _settings(opts: BenchOptions, defaults: dict, modality: str, image_size: int | None, max_length: int | None):
    from edgeft_runtime.bench import BenchSettings, parse_sweep

    sweep = parse_sweep(opts.sweep, defaults)
    if modality == "image" and sweep["seq"] != [None]:
        raise EdgeftError("--sweep seq=... does not apply to an image model", fix="sweep batch and threads only")
    return BenchSettings(sweep=sweep, rounds=opts.rounds, warmup_s=opts.warmup, duration_s=opts.duration,
                         cv_warn=opts.cv_warn, modality=modality, image_size=image_size, max_length=max_length)


def _read_data(path: Path, labels: list[str], modality: str) -> tuple[list, list[int]]:
    """--data: inputs and label indices (labels must be the run's)."""
    from edgeft_runtime.bundle import read_rows_file

    inputs, rows = read_rows_file(path, modality, flag="--data")
    if "label" not in rows[0]:
        raise EdgeftError(f"--data {path} has no `label` column", fix="add the label of each input in a `label` column")
    unknown = sorted({str(r["label"]) for r in rows} - set(labels))
    if unknown:
        raise EdgeftError(f"--data {path}: labels {unknown[:5]} are not the run's ({labels})", fix="use the run's label names")
    return inputs, [labels.index(str(r["label"])) for r in rows]


def bench_run_dir(ctx, opts: BenchOptions) -> tuple[dict, Path]:
    """Every input checked first (target, engines, sweep, --data, --out), then peers built, then the timing."""
    import shutil

    from edgeft.benchmark.engines import chosen_engines, run_engines, target_spec
    from edgeft.console import CONSOLE
    from edgeft.data.loading import read_split
    from edgeft.pipeline import log
    from edgeft_runtime.bench import accuracy, add_trtexec, check_limits, check_settings, document, prepare_out
    from edgeft_runtime.fileio import read_json

    spec, facts = target_spec(ctx, opts.target), ctx.facts()
    chosen = chosen_engines(spec, opts.engines)
    opt = next(iter(spec.latency_shape.values()))
    image_size = None
    if facts.modality == "image":
        d = ctx.require("compile.engine", target=spec.name, role="engine")
        image_size = read_json(d / "preprocessor.json")["image_size"]
    settings = _settings(opts, {"batch": [opt[0]], "seq": [None] if image_size else [opt[1]], "threads": [0]},
                         facts.modality, image_size, ctx.config.train.max_length)
    if opts.data and not opts.accuracy:
        raise EdgeftError("--data is for the accuracy pass, which --no-accuracy turns off", fix="drop one of them")
    data = _read_data(opts.data, facts.labels, facts.modality) if opts.data and facts.task == "classification" else None
    from edgeft.benchmark.engines import planned_limits

    check_limits(planned_limits(ctx, spec, chosen), settings.sweep)      # before any peer is built
    target = Path(opts.out or ctx.run_dir / "bench")
    existed = target.exists()
    out = prepare_out(target, [(ctx.run_dir, "bench")], bench=True)
    work = out / ".work"
    try:
        with CONSOLE.capture(out / "bench.log"):        # the quantizers' warnings go to the log, not the table
            engines, notes = run_engines(ctx, spec, chosen, work, log=(lambda m: None) if opts.quiet else log)
        check_limits(engines, settings.sweep)
        results, warnings = _progress_measure(engines, settings, opts.quiet)
        warnings = check_settings(settings) + warnings
        acc = []
        if opts.accuracy and facts.task == "classification":
            if data is not None:     # agreement with the FP32 reference engine (or ORT FP32) at the smallest batch
                (inputs, labels), baseline = data, None
            else:
                test = read_split(ctx.require("finetune.splits"), "test")
                inputs, labels = [e.text for e in test], [facts.labels.index(e.label) for e in test]
                baseline = np.load(ctx.require("finetune.baseline_test_logits"))
            if not opts.quiet:
                log(f"bench: accuracy per batch size over {len(inputs)} inputs")
            names = [e.name for e in engines]
            acc = accuracy(engines, settings, inputs, labels, baseline,
                           reference=next((n for n in ("edgeft-fp32-reference", "ort-fp32") if n in names), None))
            for a in acc:
                a["inputs"] = f"--data {opts.data.name}" if data is not None else "the run's test split"
        notes += add_trtexec(results, engines, image_size)
    except BaseException:
        shutil.rmtree(work if existed else out, ignore_errors=True)      # a folder made for this run goes with it
        raise
    doc = document(engines, settings, results, warnings, acc, notes=notes, source=
                   {"kind": "run", "name": ctx.run_dir.name, "target": spec.name, "run_manifest_sha256": _manifest_sha(ctx)})
    return doc, _finish(doc, out, work, opts)


def _manifest_sha(ctx) -> str:
    from edgeft_runtime.fileio import sha256_file

    return sha256_file(ctx.run_dir / "manifest.json")


def bench_bundle(source: Path, opts: BenchOptions) -> tuple[dict, Path]:
    from edgeft.console import CONSOLE
    from edgeft_runtime import Bundle
    from edgeft_runtime.bench import bench_bundle as run_bench

    if opts.engines or opts.target or opts.data:
        raise EdgeftError("--engines, --target and --data apply to a run directory; a bundle is benchmarked with "
                          "what it holds", fix="pass the run directory instead, or drop those options")
    with Bundle.open(source) as bundle:
        kw = {"rounds": opts.rounds, "warmup_s": opts.warmup, "duration_s": opts.duration, "cv_warn": opts.cv_warn}
        if opts.quiet:
            doc, out = run_bench(bundle, opts.sweep, kw, opts.out, opts.accuracy)
        else:
            with CONSOLE.progress("bench: timing", None) as bar:
                doc, out = run_bench(bundle, opts.sweep, kw, opts.out, opts.accuracy,
                                     lambda msg, done, tot: bar.update(done, tot or None, msg) if tot else None)
        return doc, _finish(doc, out, None, opts)


def _finish(doc: dict, out: Path, work: Path | None, opts: BenchOptions) -> Path:
    import shutil

    from edgeft.console import CONSOLE
    from edgeft_runtime.bench import write_outputs

    written = write_outputs(doc, out)
    if work is not None:
        shutil.rmtree(work, ignore_errors=True)
    if not opts.quiet:
        _print_table(doc)
        for n in doc["notes"]:
            CONSOLE.line(f"note: {n}")
        for w in doc["warnings"]:
            CONSOLE.line(f"warning: {w}")
        CONSOLE.line(f"bench: wrote {', '.join(written)} to {out}")
    return out


def console():
    """rich on stderr, wide enough for the table when it is not a terminal (CI logs, pipes)."""
    import sys

    from rich.console import Console

    return Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def _print_table(doc: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    h = doc["host"]
    # escaped: rich reads "[avx512_vnni]" as a style tag and drops it
    t = Table(title=escape(f"{doc['source'].get('name')} on {h['cpu'].strip()} [{h['isa_class']}], {h['cores']} cores "
                           f"(median of {doc['settings']['rounds']} rounds)"))
    for col in ("engine", "batch", "seq", "threads", "p50 ms", "p99 ms", "items/s", "cold s", "RSS MB", "CV"):
        t.add_column(col, justify="left" if col == "engine" else "right")
    for r in sorted(doc["results"], key=lambda r: (r["batch"], r["seq"] or 0, r["threads"] or 0)):
        t.add_row(r["engine"], str(r["batch"]), str(r["seq"] or "—"), str(r["threads"] or "default"),
                  f"{r['p50_ms']:.3g}", f"{r['p99_ms']:.3g}", f"{r['throughput']:.4g}",
                  f"{r['cold_start_s']:.2f}" if r["cold_start_s"] is not None else "—",
                  f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] is not None else "—",
                  ("—" if r["round_cv"] is None else f"{r['round_cv']:.1%}") + (" ⚠" if r["warnings"] else ""))
    console().print(t)
    if doc["accuracy"]:
        from edgeft_runtime.bench import caveat_marks

        marks = caveat_marks(doc)
        a = Table(title="accuracy per batch size" + (" (⚠: see its note)" if marks else ""))
        for col in ("engine", "batch", "accuracy", "top-1 agreement"):
            a.add_column(col)
        for row in doc["accuracy"]:
            a.add_row(row["engine"] + marks.get(row["engine"], ""), str(row["batch"]), f"{row['accuracy']:.4f}" if row["accuracy"] is not None else "—",
                      f"{row['top1_agreement']:.4f}" if row["top1_agreement"] is not None else "—")
        console().print(a)


def parse_threshold(text: str) -> float:
    try:
        value = float(text[:-1]) / 100 if text.strip().endswith("%") else float(text)
    except ValueError:
        raise EdgeftError(f"--threshold {text!r}: not a number", fix="pass e.g. 5% or 0.05") from None
    if not 0 <= value < 10:
        raise EdgeftError(f"--threshold {text!r}: must be between 0 and 1000% (a fraction: 0.05, or a percentage: 5%)",
                          fix="pass e.g. 5%")
    return value


def compare_files(old: Path, new: Path, threshold: str, as_json: bool) -> None:
    import click

    from edgeft_runtime.bench import compare, load_bench

    a, b = load_bench(old), load_bench(new)
    thr = parse_threshold(threshold)
    rows = compare(a, b, thr)
    if not rows:
        raise EdgeftError(f"{old} and {new} share no engine × point", fix="compare two runs of the same sweep")
    notes = []
    key = lambda r: (r["engine"], r["batch"], r["seq"], r["threads"])  # noqa: E731
    only = ({key(r) for r in a["results"]} ^ {key(r) for r in b["results"]})
    if only:
        notes.append(f"{len(only)} engine × point(s) are in only one of the files and were not compared")
    few = min(a["settings"].get("rounds", 0), b["settings"].get("rounds", 0))
    if few < 2:
        notes.append(f"a run with {few} round: no spread to judge noise by, so no point is called regressed or "
                     "faster (bench both with --rounds 3 or more)")
    elif few < 3:
        notes.append(f"a run with {few} rounds: the interval is wide and only large slowdowns can show")
    differ = [k for k in ("cpu", "machine", "isa_class", "cores") if a["host"].get(k) != b["host"].get(k)]
    if differ:
        notes.append("the runs are from different hosts (" + ", ".join(
            f"{k} {a['host'].get(k)} vs {b['host'].get(k)}" for k in differ) + "): the comparison measures the hosts too")
    if as_json:
        click.echo(json.dumps({"threshold": thr, "rows": rows, "notes": notes}, indent=2))
    else:
        click.echo(f"{'engine':28s} {'batch':>5s} {'seq':>5s} {'thr':>4s} {'old p50':>9s} {'new p50':>9s} {'ratio':>6s}  95% interval")
        for r in rows:
            flag = "REGRESSED" if r["regressed"] else "faster" if r["improved"] else "" if r["judged"] else "(not judged: 1 round)"
            click.echo(f"{r['engine']:28s} {r['batch']:5d} {str(r['seq'] or '—'):>5s} {str(r['threads'] or '-'):>4s} "
                       f"{r['old_p50_ms']:9.4g} {r['new_p50_ms']:9.4g} {r['ratio']:6.3f}  "
                       f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] {flag}")
        for n in notes:
            click.echo(f"note: {n}", err=True)
    bad = [r for r in rows if r["regressed"]]
    if bad:
        raise GateFailed(f"{len(bad)} engine × point(s) of {new} slower than in {old} beyond noise and the {thr:.0%} threshold: "
                         + ", ".join(f"{r['engine']} b{r['batch']} s{r['seq']} ({r['ratio']:.2f}×)" for r in bad[:5]),
                         fix="find what changed (engine, host load, versions in bench.json), or raise --threshold")
