"""Build a TensorRT engine from ONNX with exactly a target's settings.

Standalone on purpose: it imports only tensorrt and the standard library, so the same file is what
``edgeft compile`` runs where TensorRT is installed *and* what the deferred build kit ships to the
device (as ``build_engine.py``, next to ``settings.json`` and the ONNX) where it is not.

    python build_engine.py            # in the kit folder: reads settings.json, writes model.engine

Writes: model.engine (serialized), timing.cache (reused on the next build), engine_info.json
(TensorRT version, GPU, build seconds, typing, per-layer precision from the engine inspector).

TensorRT 10 builds weakly typed with the FP16 (and INT8) builder flags, as before. TensorRT 11 removed
those flags: every network is strongly typed and each layer runs in the type the ONNX gives it, so an
FP16 target's ONNX is already FP16 (edgeft converts it at compile) and an INT8 target's Q/DQ layers run
in INT8, the layers between them in the ONNX's FP32.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path


def _gpu_name() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - the name is informational; the build does not depend on it
        return "unknown"


# words the inspector uses for a tensor's type, in its short ("Int8", "Half") and verbose ("Channel major
# INT8 format where channel % 4 == 0", "Row major linear FP16 format (kLINEAR)") forms
_TYPE_WORDS = (("Int8", ("int8",)), ("FP8", ("fp8",)), ("Half", ("half", "fp16")), ("BFloat16", ("bf16", "bfloat16")),
               ("Float", ("float", "fp32")), ("Int32", ("int32",)), ("Int64", ("int64",)), ("Bool", ("bool",)))


def _tensor_precision(tensor: dict) -> str:
    text = " ".join(str(v) for k, v in tensor.items()
                    if k.replace("/", "").replace(" ", "").lower() in ("formatdatatype", "datatype", "format", "type"))
    words = set(re.findall(r"[a-z0-9]+", text.lower()))
    return next((name for name, keys in _TYPE_WORDS if words & set(keys)), "unknown")


def layer_precisions(info: dict) -> dict:
    """Per-layer precision from the engine inspector's JSON (TensorRT 10 or 11). Like NVIDIA's TREx, a layer's
    precision is its first *input*'s type: an explicitly quantized GEMM reads INT8 and writes FP16/FP32."""
    layers = []
    for layer in info.get("Layers", []):
        if isinstance(layer, str):           # LAYER_NAMES_ONLY verbosity gives bare names
            layers.append({"name": layer, "precision": "unknown"})
            continue
        tensors = (layer.get("Inputs") or []) + (layer.get("Outputs") or [])
        precision = next((p for p in map(_tensor_precision, tensors) if p != "unknown"), "unknown")
        layers.append({"name": layer.get("Name", ""), "type": layer.get("LayerType", ""), "precision": precision})
    return {"layers": layers, "by_precision": dict(Counter(layer["precision"] for layer in layers))}


def _layer_precisions(engine, trt) -> dict:
    inspector = engine.create_engine_inspector()
    return layer_precisions(json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON)))


def check_version(version: str) -> None:
    """This build code uses the TensorRT 10/11 API (OnnxParser, optimization profiles, strong typing)."""
    major = int(version.split(".")[0])
    if major < 10:
        raise SystemExit(f"TensorRT {version} is too old for this build kit: it needs TensorRT 10 or 11 "
                         "(JetPack 6.1 or newer on Jetson; JetPack 6.0 ships TensorRT 8.6)")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build(onnx_path: Path, out_dir: Path, settings: dict, cache_path: Path | None = None) -> dict:
    import tensorrt as trt

    check_version(trt.__version__)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    weak = hasattr(trt.BuilderFlag, "FP16")          # TensorRT <= 10; 11 has strong typing only
    strong_flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if weak or strong_flag is None else 1 << int(strong_flag))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}:\n{errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.get("workspace_mb", 2048)) << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if settings["precision"] == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)      # the FP32 reference in true FP32: TF32 GEMMs are on by default
    if weak:                                         # strongly typed: the ONNX's types decide instead
        if settings["precision"] in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)    # layers left unquantized run in FP16
        if settings["precision"] == "int8":
            config.set_flag(trt.BuilderFlag.INT8)    # explicit quantization: scales come from the Q/DQ nodes
    profile = builder.create_optimization_profile()
    shapes = settings["input_shapes"]
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        s = shapes.get(name) or next(iter(shapes.values()))
        profile.set_shape(name, s["min"], s["opt"], s["max"])
    config.add_optimization_profile(profile)
    cache_path = cache_path or out_dir / "timing.cache"
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):     # from another TensorRT or GPU: start afresh
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    t0 = time.time()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT build failed; the TensorRT log above says why")
    seconds = time.time() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(out_dir / "model.engine", bytes(serialized))
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    info = {"tensorrt_version": trt.__version__, "gpu": _gpu_name(), "build_seconds": round(seconds, 1),
            "precision": settings["precision"], "onnx_precision": settings.get("onnx_precision", "fp32"),
            "typing": "weak (builder precision flags)" if weak else "strong (each layer in its ONNX type)",
            "input_shapes": shapes, "timing_cache": str(cache_path),
            **_layer_precisions(engine, trt)}
    (out_dir / "engine_info.json").write_text(json.dumps(info, indent=1))
    return info


def main() -> None:
    here = Path(__file__).resolve().parent
    settings = json.loads((here / "settings.json").read_text())
    info = build(here / "model.onnx", here, settings)
    print(f"built {here / 'model.engine'} with TensorRT {info['tensorrt_version']} on {info['gpu']} "
          f"in {info['build_seconds']}s; layers by precision: {info['by_precision']}")


if __name__ == "__main__":
    sys.exit(main())
