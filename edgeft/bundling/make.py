"""``edgeft package``: one bundle per target of a verified run, as a folder and a byte-reproducible .tar.gz.

A bundle holds the engine folder compile wrote (an ORT engine, or a TensorRT target's build kit), the golden
set, the device runtime's wheel with a hash-pinned requirements file, an install script, a README, optionally
a Dockerfile and the FP32 reference engine, and ``bundle.json`` (schema in ``edgeft_runtime.schema``), which
lists the size and sha256 of every other file. Everything is read from the run directory through the run
context (checked against the manifest's sha256 first), and written to a temp folder renamed into place.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeft.errors import EdgeftError, GateFailed, RunDirError
from edgeft_runtime.fileio import read_json, sha256_file, write_text_atomic

DEFAULT_GOLDEN = 64


@dataclass
class PackageOptions:
    targets: tuple[str, ...] = ()
    out: Path | None = None
    sign_key: Path | None = None
    docker: bool = False
    allow_failed: bool = False
    golden: int = DEFAULT_GOLDEN
    with_reference: bool = False
    name: str | None = None
    version: str | None = None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._") or "bundle"


def _canonical_json(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _check_verify_current(manifest) -> None:
    stages = manifest.data.get("stages", {})
    if "verify" not in stages:
        raise RunDirError(f"{manifest.run_dir} has no verify results: a bundle ships with the verdict it was released with",
                          fix=f"run `edgeft verify {manifest.run_dir}` first")
    older = [s for s in ("finetune", "export", "compile") if stages.get(s, {}).get("finished", "") > stages["verify"].get("finished", "")]
    if older:
        raise RunDirError(f"{manifest.run_dir}: {older[-1]} ran again after verify, so the verify report is not about "
                          "these engines", fix=f"run `edgeft verify {manifest.run_dir}` again, then package")


def package_run(ctx, opts: PackageOptions, log=print) -> list[Path]:
    """Bundles for ``opts.targets`` (default: every target of the run); returns the bundle folders."""
    from edgeft.targets import load_target

    _check_verify_current(ctx.manifest)
    report = read_json(ctx.require("verify.report_json"))
    specs = {load_target(t).name: load_target(t) for t in ctx.config.targets}
    wanted = list(opts.targets) or list(specs)
    if "host" in wanted:       # what `edgeft run` defaults to: this CPU's shipped target
        from edgeft.targets import host_target_name

        here = host_target_name(modality=ctx.facts().modality)[0]
        wanted = [here if t == "host" else t for t in wanted]
    if any(not t.strip() for t in wanted):
        raise EdgeftError("--target is empty", fix=f"pass one of the run's targets ({', '.join(specs)}), or drop --target")
    unknown = [t for t in wanted if t not in specs and Path(t).stem not in specs]
    if unknown:
        from edgeft.targets import list_targets

        known = unknown[0] in list_targets() or Path(unknown[0]).is_file()
        why = "this run has no engine for it" if known else "no such target (not shipped, not a YAML file)"
        raise EdgeftError(f"--target {unknown[0]}: {why}; the run's targets: {', '.join(specs)}",
                          fix="pass one of the run's targets" + (", or compile and verify for it first" if known else ""))
    targets = list(dict.fromkeys(t if t in specs else Path(t).stem for t in wanted))
    engines = {e["target"]: e for e in report["engines"] if e["role"] == "engine"}
    for t in targets:
        row = engines.get(t)
        if row is None:
            raise RunDirError(f"verify's report has no row for {t}", fix=f"run `edgeft verify {ctx.run_dir}` again")
        if row["verdict"] == "failed" and not opts.allow_failed:
            failed = [f"{g['name']} = {g['value']:.4g} (needs {g['op']} {g['threshold']})" for g in row["gates"] if g["passed"] is False]
            raise GateFailed(f"{t} failed verification ({'; '.join(failed)}): it is not packaged",
                             fix="fix the engine (see report.md), or pass --allow-failed to package it anyway "
                                 "(bundle.json and every device command then say it failed)")
    if opts.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", opts.name):
        raise EdgeftError(f"--name {opts.name!r}: a bundle name is letters, digits, . _ - (it names a folder and an archive)",
                          fix="pass e.g. --name voice-intents")
    if opts.version is not None and not opts.version.strip():
        raise EdgeftError("--version is empty", fix="pass e.g. --version 1.2.0, or drop it for the default")
    bad = next((c for c in opts.version or "" if unicodedata.category(c)[0] == "C"), None)
    if bad is not None:
        raise EdgeftError(f"--version {opts.version!r} holds a control or invisible character ({bad!r}): every device "
                          "command prints the version on one line", fix="pass e.g. --version 1.2.0")
    from edgeft_runtime.bench import prepare_out

    target = Path(opts.out or ctx.run_dir / "bundles")
    existed = target.exists()
    out = prepare_out(target, [(ctx.run_dir, "bundles")])
    made = []
    try:
        private = opts.sign_key and _load_key(opts.sign_key)      # a bad key fails before any work
        for t in targets:
            spec, row = specs[t], engines[t]
            name = _slug(f"{opts.name}-{t}" if opts.name and len(targets) > 1 else opts.name or f"{ctx.run_dir.name}-{t}")
            log(f"package: {t} -> {out / name}")
            if row["verdict"] == "incomplete":
                unmeasured = [g["name"] for g in row["gates"] if g["passed"] is None]
                log(f"package: warning: {t}'s verification is incomplete (not measured: {', '.join(unmeasured)}); "
                    "the bundle and every device command say so: measure it on the device with `edgeft-runtime "
                    "bench`, or verify the run on a host of the target's class")
            made.append(_one_bundle(ctx, spec, row, report, opts, out, name, private, log))
    except BaseException:
        if not existed and not any(out.iterdir()):      # a folder made for this package, left empty by the failure
            out.rmdir()
        raise
    return made


def _load_key(path: Path):
    from edgeft_runtime.signing import load_private_key

    return load_private_key(path)


def _replaceable(folder: Path) -> bool:
    """Only a bundle edgeft wrote is replaced: a folder with bundle.json, every other file listed in it."""
    if not folder.exists():
        return True
    meta = folder / "bundle.json"
    if not folder.is_dir() or not meta.is_file():
        return False
    try:
        listed = {f["path"] for f in read_json(meta)["files"]} | {"bundle.json", "bundle.sig"}
    except (ValueError, KeyError, TypeError):
        return False
    return all(p.relative_to(folder).as_posix() in listed for p in folder.rglob("*") if p.is_file())


def _our_archive(archive: Path, name: str) -> bool:
    """A .tar.gz edgeft wrote for this bundle name: one top folder ``name`` with its bundle.json."""
    import tarfile

    try:
        with tarfile.open(archive, "r:gz") as tar:
            names = tar.getnames()
    except (tarfile.TarError, OSError, EOFError):
        return False
    return bool(names) and all(n == name or n.startswith(name + "/") for n in names) and f"{name}/bundle.json" in names


def _one_bundle(ctx, spec, row: dict, report: dict, opts: PackageOptions, out: Path, name: str, private, log) -> Path:
    import edgeft_runtime
    from edgeft import __version__
    from edgeft.bundling import docker, golden, install
    from edgeft.bundling.archive import write_tar_gz
    from edgeft.bundling.wheel import build_runtime_wheel
    from edgeft.data.loading import read_split

    final, archive = out / name, out / f"{name}.tar.gz"
    if not _replaceable(final) or (archive.exists() and not _our_archive(archive, name)):
        raise EdgeftError(f"{final if final.exists() else archive} exists and is not a bundle edgeft wrote there",
                          fix="move it away, or pass --out another folder")
    work, staged = out / f".{name}.tmp", out / f".{name}.tar.gz.staged"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        facts = ctx.facts()
        engine_src = ctx.require("compile.engine", target=spec.name, role="engine")
        meta_engine = read_json(engine_src / "engine.json")
        shutil.copytree(engine_src, work / "engine")
        reference = None
        if opts.with_reference:
            shutil.copytree(ctx.require("compile.engine", target=spec.name, role="fp32-reference"), work / "reference")
            reference = {"dir": "reference", "model_file": "reference/" + read_json(work / "reference/engine.json")["file"]}

        # golden set: the first N test examples, raw, with the baseline's and the engine's logits from verify
        test = read_split(ctx.require("finetune.splits"), "test")
        n = max(0, min(opts.golden, len(test)))
        preds = ctx.require("verify.predictions")
        engine_logits = np.load(preds / f"{spec.name}-engine.npy")[:n]
        base_logits = np.load(ctx.require("finetune.baseline_test_logits"))[:n]
        inputs = [e.text for e in test[:n]]
        (work / "golden").mkdir()
        lines = []
        if facts.modality == "image":
            (work / "golden/images").mkdir()
            for i, src in enumerate(inputs):
                rel = f"golden/images/{i:04d}{Path(src).suffix.lower() or '.png'}"
                shutil.copyfile(src, work / rel)
                lines.append({"image": rel, "label": test[i].label})
        else:
            lines = [{"text": e.text, "label": e.label} for e in test[:n]]
        write_text_atomic(work / "golden/inputs.jsonl", "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
        ref_onnx = ctx.require("export.int8_onnx" if spec.precision == "int8" else "export.fp32_onnx")
        whole = " (the whole test split)" if n < opts.golden else ""
        log(f"package: {spec.name}: golden set of {n} inputs{whole}; tolerance from the Q/DQ reference")
        ref = golden.reference_logits(ref_onnx, work / "engine", inputs, ctx.config.train.max_length)
        tol = golden.tolerance(engine_logits, ref, golden.head_step(ref_onnx) if spec.precision == "int8" else None,
                               deferred_kit=bool(meta_engine.get("deferred")))
        _require_decisive(engine_logits, tol["atol"], facts.task, n, len(test), opts.golden)
        # the tolerance also goes into a checksummed file: bundle.json is unsigned, and its copy is checked against this
        write_text_atomic(work / "golden/expected.json", _canonical_json(
            {"engine_logits": engine_logits.tolist(), "baseline_logits": base_logits.tolist(),
             "labels": facts.labels, "tolerance": tol}).decode())

        wheel = build_runtime_wheel(work / "runtime")
        deps = list(edgeft_runtime.REQUIRES) + (edgeft_runtime.EXTRAS["image"] if facts.modality == "image" else [])
        if spec.backend in ("tensorrt", "openvino-cpu"):
            deps += edgeft_runtime.EXTRAS[spec.backend.split("-")[0]]
        install.write_runtime_files(work, wheel, deps, spec, name)
        if opts.docker:
            docker.write_dockerfile(work, spec, name)

        manifest_sha = sha256_file(ctx.run_dir / "manifest.json")
        meta = {
            "schema_version": 1,
            "name": name,
            "version": opts.version or f"0+{manifest_sha[:12]}",
            "target": {"name": spec.name, "backend": spec.backend, "precision": spec.precision,
                       "description": spec.description, "device": spec.device.model_dump(),
                       "int8_kernels": spec.int8_kernels if spec.backend == "onnxruntime-cpu" and spec.precision == "int8" else None},
            # ONNX Runtime's model-package variant payload (executor_info["ort"]): model_file + session_options
            "engine": {"dir": "engine", "model_file": f"engine/{meta_engine['file']}", "runtime": meta_engine.get("runtime", meta_engine["backend"]),
                       "deferred": bool(meta_engine.get("deferred")),
                       "session_options": {"session.intra_op_thread_count": str(spec.device.threads)}
                       if spec.backend == "onnxruntime-cpu" else {}},
            "reference": reference,
            "modality": facts.modality, "task": facts.task,
            "inputs": _input_specs(ref_onnx, spec, facts.modality, work / "engine"),
            "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", len(facts.labels)]}],
            "preprocessing": ({"type": "image", "file": "engine/preprocessor.json"} if facts.modality == "image" else
                              {"type": "tokenizer", "file": "engine/tokenizer.json", "max_length": ctx.config.train.max_length}),
            "labels": facts.labels,
            "runtime": {"distribution": "edgeft-runtime", "version": edgeft_runtime.__version__,
                        "wheel": f"runtime/{wheel.name}", "requirements": "runtime/requirements.txt",
                        "dependencies": deps, "python": edgeft_runtime.REQUIRES_PYTHON},
            "verification": _verification(row, report, opts.allow_failed),
            "golden": {"inputs": "golden/inputs.jsonl", "expected": "golden/expected.json", "count": n,
                       "tolerance": tol, "engine_logits_from": "edgeft verify (batch 1, each input at its own length)"},
            "lineage": {"run_manifest_sha256": manifest_sha, "data_fingerprint": ctx.manifest.data.get("data", {}).get("fingerprint"),
                        "base_model": str(ctx.config.model), "edgeft_version": __version__,
                        "engine_sha256": sha256_file(engine_src / meta_engine["file"]),
                        "packages": ctx.manifest.data.get("versions", {})},
        }
        meta["files"] = [{"path": p.relative_to(work).as_posix(), "sha256": sha256_file(p), "bytes": p.stat().st_size}
                         for p in sorted(work.rglob("*")) if p.is_file()]
        from edgeft_runtime.schema import BUNDLE_SCHEMA, validate

        validate(meta, BUNDLE_SCHEMA, "bundle.json")
        data = _canonical_json(meta)
        (work / "bundle.json").write_bytes(data)
        if private is not None:
            from edgeft_runtime.signing import sign

            (work / "bundle.sig").write_bytes(_canonical_json(sign(data, private)))
        # the archive is made before the folder moves into place, so an interrupted package never leaves a
        # bundle folder without its archive
        write_tar_gz(work, staged, top=name)
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
        os.replace(staged, archive)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        staged.unlink(missing_ok=True)
        raise
    size = sum(f["bytes"] for f in meta["files"])
    log(f"package: {name}: {len(meta['files'])} files, {size / 1e6:.1f} MB; {archive.name} "
        f"({archive.stat().st_size / 1e6:.1f} MB, sha256 {sha256_file(archive)[:16]}…)")
    return final


def _require_decisive(logits: np.ndarray, atol: float, task: str, n: int, available: int, asked: int) -> None:
    """A bundle whose golden check can never pass is not made: `edgeft-runtime check` fails when no golden
    input's top-1 margin exceeds 2 x atol (no label would be checked)."""
    if task != "classification" or logits.ndim != 2 or logits.shape[-1] < 2 or not n:
        return
    from edgeft_runtime.bundle import decisive

    if decisive(logits, atol).any():
        return
    more = (f"pass a larger --golden (the test split has {available} inputs)" if asked < available
            else "the whole test split is in the golden set already: the engine's decisions are too close to call")
    raise EdgeftError(f"no golden input has a top-1 margin above 2 x the tolerance ({2 * atol:.4g}): the bundle's "
                      "`edgeft-runtime check` could not check any label and would fail on every device",
                      fix=f"{more}; or train longer for more confident decisions")


def _input_specs(onnx_path: Path, spec, modality: str, engine_dir: Path) -> list[dict]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    out = []
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type).name
        rng = spec.input_shapes.get(inp.name) or next(iter(spec.input_shapes.values()))
        row = {"name": inp.name, "dtype": dtype, "min": list(rng.min), "opt": list(rng.opt), "max": list(rng.max)}
        if modality == "image":
            size = read_json(engine_dir / "preprocessor.json")["image_size"]
            row.update({k: [v[0], 3, size, size] for k, v in (("min", rng.min), ("opt", rng.opt), ("max", rng.max))})
        out.append(row)
    return out


def _verification(row: dict, report: dict, allow_failed: bool) -> dict:
    lat = row.get("latency_ms") or {}
    split = row.get("test_split_latency_ms") or {}
    host = dict(report.get("host") or {})
    host.pop("platform", None)                 # kernel build strings say nothing a device needs
    return {"verdict": row["verdict"], "packaged_despite_failure": bool(allow_failed and row["verdict"] == "failed"),
            "accuracy": row.get("accuracy"), "baseline_accuracy": report["baseline"].get("accuracy"),
            "top1_agreement": row.get("top1_agreement"), "p50_ms": lat.get("p50_ms"), "p99_ms": lat.get("p99_ms"),
            "latency_shape": row.get("latency_shape"), "latency_ratio_vs_fp32": row.get("latency_ratio_vs_fp32"),
            "test_split_p50_ms": split.get("p50_ms"), "test_examples": report.get("test_examples"),
            "host": host, "gates": row["gates"], "run_verdict": report.get("verdict")}
