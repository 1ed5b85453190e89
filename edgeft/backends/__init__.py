"""Backends, registered by name and imported only when used."""
from __future__ import annotations

import importlib

from edgeft.backends.base import Backend, Capabilities
from edgeft.errors import TargetError

# name -> "module:Class"; the module is imported only when the backend is used.
REGISTRY: dict[str, str] = {
    "onnxruntime-cpu": "edgeft.backends.onnxruntime_cpu:OnnxRuntimeCPU",
    "tensorrt": "edgeft.backends.tensorrt:TensorRT",
}

CAPABILITIES: dict[str, Capabilities] = {
    "onnxruntime-cpu": Capabilities(precisions=("fp32", "int8"), device_kinds=("cpu",),
                                    isas=("any", "avx2", "avx512_vnni", "neon")),
    # isa = CUDA compute capability the engine is built for (TensorRT engines are per-GPU).
    "tensorrt": Capabilities(precisions=("fp32", "fp16", "int8"), device_kinds=("gpu",),
                             isas=("any", "sm_72", "sm_75", "sm_80", "sm_86", "sm_87", "sm_89", "sm_90")),
}


def get_backend(name: str) -> Backend:
    if name not in REGISTRY:
        raise TargetError(f"Unknown backend {name!r}. Registered: {sorted(REGISTRY)}",
                          fix="set `backend:` in the target YAML to one of the registered names")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)()
