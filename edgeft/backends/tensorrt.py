"""TensorRT backend (optional extra ``edgeft[trt]``): explicit-quantization INT8 and FP16 engines.

Before anything is built, an INT8 graph must pass the Q/DQ lint (``qdq_lint``): signed, zero point 0,
per-channel weight scales on the right axis. Then:

- an FP16 target's graph is converted to FP16 first (``to_fp16``): TensorRT 11 takes precision from
  the graph (strong typing), TensorRT 10 from builder flags, and both then build the same FP16 graph;
- where ``tensorrt`` imports, ``trt_build.build`` makes the engine (OnnxParser, FP16/INT8 builder flags
  on TensorRT 10, strong typing on 11, one optimization profile from the target's min/opt/max shapes, a
  timing cache kept in ``$EDGEFT_CACHE_DIR/tensorrt/`` and reused, per-layer precision from the engine
  inspector);
- where it does not, the result is a **deferred build kit**: the (Q/DQ or FP16) ONNX,
  ``build_engine.py`` (the same ``trt_build`` file), ``settings.json`` with exactly the target's settings,
  and a README. No engine is built and none is claimed; verify checks the kit's ONNX through ONNX Runtime
  only.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from edgeft.backends.base import Backend, Capabilities, copy_sidecars
from edgeft.errors import BackendUnavailable, TargetError
from edgeft_runtime.fileio import write_json_atomic
from edgeft_runtime.session import ENGINE_JSON
from edgeft_runtime.trt_device import tensorrt_version

KIT_README = """Deferred TensorRT build kit for target {target} ({precision}).

TensorRT was not importable where this kit was made, so NO ENGINE WAS BUILT THERE.
On the device (TensorRT 10 or 11 with its Python bindings, and a CUDA GPU):

    python build_engine.py

builds model.engine from model.onnx with exactly the settings in settings.json (precision, input shape
profile, workspace) and writes engine_info.json (TensorRT version, GPU, per-layer precision).
"""


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEFT_CACHE_DIR", Path.home() / ".cache" / "edgeft")) / "tensorrt"


def timing_cache_path(target: str, version: str | None = None, gpu: str | None = None) -> Path:
    """One timing cache per TensorRT version, GPU and target: a cache from another version or GPU is not
    reused (TensorRT would reject or mis-time it)."""
    import re

    from edgeft.backends.trt_build import _gpu_name

    version = version or tensorrt_version() or "none"
    gpu = re.sub(r"[^A-Za-z0-9._-]+", "-", gpu or _gpu_name()).strip("-") or "unknown"
    return cache_dir() / f"{target}-trt{version}-{gpu}.timing.cache"


class TensorRT(Backend):
    name = "tensorrt"
    # isa = CUDA compute capability the engine is built for (TensorRT engines are per-GPU)
    capabilities = Capabilities(precisions=("fp32", "fp16", "int8"), device_kinds=("gpu",),
                                isas=("any", "sm_72", "sm_75", "sm_80", "sm_86", "sm_87", "sm_89", "sm_90"))

    def check_available(self) -> None:
        """Compiling always works: without TensorRT it yields a deferred build kit (see module doc)."""

    def require_runtime(self) -> None:
        if tensorrt_version() is None:
            raise BackendUnavailable("TensorRT is not installed here",
                                     fix="pip install 'edgeft[trt]' on a machine with an NVIDIA GPU")

    def compile(self, onnx_path: Path, target, out_dir: Path, precision: str | None = None,
                calibration_inputs: Path | None = None) -> dict[str, Any]:
        """TensorRT builds from ModelOpt's Q/DQ as is (explicit quantization): no calibration here."""
        from edgeft.backends.qdq_lint import lint_for_tensorrt

        precision = precision or target.precision
        out_dir.mkdir(parents=True, exist_ok=True)
        lint = lint_for_tensorrt(onnx_path) if precision == "int8" else None
        if lint and not lint["ok"]:
            raise TargetError(f"{onnx_path} is not valid for TensorRT explicit quantization:\n  - "
                              + "\n  - ".join(lint["problems"][:20]),
                              fix="export signed symmetric INT8 Q/DQ (ModelOpt's default) for TensorRT targets")
        fp16 = None
        if precision == "fp16":
            fp16 = to_fp16(onnx_path, out_dir / "model.onnx")
        else:
            shutil.copy2(onnx_path, out_dir / "model.onnx")
        copy_sidecars(onnx_path.parent, out_dir)
        settings = {"target": target.name, "precision": precision, "workspace_mb": 2048,
                    "onnx_precision": "fp16" if fp16 else "fp32",
                    "input_shapes": {k: v.model_dump() for k, v in target.input_shapes.items()}}
        write_json_atomic(out_dir / "settings.json", settings)
        meta: dict[str, Any] = {"backend": self.name, "target": target.name, "precision": precision,
                                "qdq_lint": lint, "fp16_conversion": fp16, "where_it_ran": _where_from_lint(lint)}
        if tensorrt_version() is None:
            shutil.copy2(Path(__file__).with_name("trt_build.py"), out_dir / "build_engine.py")
            (out_dir / "README.txt").write_text(KIT_README.format(target=target.name, precision=precision))
            meta.update(deferred=True, file="model.onnx", runtime="onnxruntime-cpu",
                        message="TensorRT is not installed here: this is a deferred build kit, no engine was built")
        else:
            from edgeft.backends.trt_build import build

            try:
                info = build(out_dir / "model.onnx", out_dir, settings, timing_cache_path(target.name))
            except (RuntimeError, TypeError, AttributeError) as err:
                # tensorrt imports without a usable GPU (no driver, no device): say so instead of a traceback
                raise BackendUnavailable(f"TensorRT {tensorrt_version()} is installed but could not build for "
                                         f"{target.name}: {str(err).splitlines()[0][:200]}",
                                         fix="compile on the machine with the NVIDIA GPU (or uninstall tensorrt "
                                             "here to get a deferred build kit for the device)") from None
            (out_dir / "model.onnx").unlink()
            meta.update(deferred=False, file="model.engine", runtime="tensorrt", tensorrt=info["tensorrt_version"],
                        gpu=info["gpu"], where_it_ran={"by_precision": info["by_precision"],
                                                       "int8_share": _int8_share(info["by_precision"])})
        write_json_atomic(out_dir / ENGINE_JSON, meta)
        return meta

    def open(self, engine_dir: Path, threads: int | None = None):
        """A built engine (``model.engine``); a deferred kit's engine.json names onnxruntime-cpu instead."""
        from edgeft_runtime.session import TrtSession

        self.require_runtime()
        return TrtSession(engine_dir)


def to_fp16(src: Path, dest: Path) -> dict[str, Any]:
    """Write ``src`` with its float tensors in FP16, inputs and outputs kept as they are, to ``dest``.

    TensorRT 11 has no FP16 builder flag: a strongly typed network runs each layer in its ONNX type, so
    an FP16 engine needs an FP16 graph (TensorRT 10 gets the same graph, with the flag). ONNX Runtime's
    own converter (``onnxruntime.transformers.float16``) with its default list of ops kept in FP32;
    NVIDIA's ModelOpt AutoCast needs ``nvidia-modelopt[onnx]``, whose onnxruntime pins clash with ours.
    verify runs this very graph through ONNX Runtime, so its accuracy is measured before any device."""
    from collections import Counter

    import onnx
    from onnx import TensorProto
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dest))
    kinds = Counter(TensorProto.DataType.Name(i.data_type) for i in model.graph.initializer)
    return {"converter": "onnxruntime.transformers.float16", "initializers_by_type": dict(kinds.most_common()),
            "casts": sum(n.op_type == "Cast" for n in model.graph.node)}


def _int8_share(by_precision: dict[str, int]) -> float:
    total = sum(by_precision.values())
    return round(by_precision.get("Int8", 0) / total, 4) if total else 0.0


def _where_from_lint(lint: dict | None) -> dict[str, Any]:
    """Before a build, say what the graph asks for: the Q/DQ-wrapped weights are the int8 candidates."""
    if not lint:
        return {"int8_compute_nodes": 0, "float_compute_nodes": None, "int8_share": 0.0, "op_counts": {}}
    return {"int8_compute_nodes": lint["counts"]["weight_dq"], "float_compute_nodes": None,
            "int8_share": None, "op_counts": {}, "note": "planned by Q/DQ placement; TensorRT decides at build"}
