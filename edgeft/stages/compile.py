"""Stage ``compile``: one engine per target YAML, plus an FP32 engine as each target's reference.

Reads (through the run context): ``export.int8_onnx`` (INT8 targets) or ``export.fp32_onnx`` (FP32
targets), ``export.calibration_inputs``, ``finetune.labels``; the targets named in config (``targets``). Writes ``compile/<target>/engine/`` and
``compile/<target>/fp32-reference/``: the backend's engine file, ``engine.json`` (how to open it,
versions, where the math runs), tokenizer files and ``labels.json`` so each engine stands alone.

Raises:
    TargetError: unknown target or one its backend cannot serve (checked before any build).
    BackendUnavailable: the backend's runtime is not installed.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from edgeft.artifacts import in_stage, rel_path
from edgeft.backends import REGISTRY
from edgeft.manifest import Artifact
from edgeft.targets import load_target

NAME = "compile"


def fingerprint(ctx) -> str:
    upstream = ctx.recorded("export.int8", "export.fp32", "finetune.labels")
    specs = [load_target(t) for t in ctx.config.targets]
    backends = tuple(sorted({REGISTRY[t.backend].split(":")[0] for t in specs}))
    return ctx.fingerprint(NAME, {"targets": [t.model_dump() for t in specs]}, upstream, modules=backends)


def run(ctx, work: Path, force: bool = False) -> list[Artifact]:
    from edgeft.backends import get_backend

    specs = [load_target(t) for t in ctx.config.targets]   # all validated before any build
    backends = {s.name: get_backend(s.backend) for s in specs}
    for b in backends.values():
        b.check_available()
    labels = ctx.require("finetune.labels")
    out: list[Artifact] = []
    for spec in specs:
        builds = [("engine", spec.precision), ("fp32-reference", "fp32")]
        for sub, precision in builds:
            kind = "export.int8" if precision == "int8" else "export.fp32"     # the folder: graph + tokenizer
            ctx.log(f"compile: {spec.name} [{sub}, {precision}] with {spec.backend}")
            dest = work / in_stage("compile.engine", target=spec.name, role=sub)
            calib = ctx.require("export.calibration_inputs") if precision == "int8" else None
            meta = backends[spec.name].compile(ctx.require(kind) / "model.onnx", spec, dest, precision=precision,
                                               calibration_inputs=calib)
            shutil.copy2(labels, dest / "labels.json")
            wr = meta["where_it_ran"]
            if meta.get("deferred"):
                ctx.log(f"compile: {spec.name}/{sub}: {meta['message']}; kit in compile/{spec.name}/{sub}/")
            else:
                ctx.log(f"compile: {spec.name}/{sub}: {wr.get('int8_compute_nodes')} int8 / "
                        f"{wr.get('float_compute_nodes')} float compute nodes (int8 share {wr.get('int8_share')})")
            out.append(Artifact(f"{spec.name}/{sub}/{meta['file']}", f"engine/{spec.backend}", NAME,
                                parents=[rel_path(kind) + "/model.onnx"], target=spec.name, metrics={"precision": precision, **wr}))
            out += [Artifact(f"{spec.name}/{sub}/{p.name}", "engine/sidecar", NAME, target=spec.name)
                    for p in sorted(dest.iterdir()) if p.name != meta["file"]]
    return out
