"""Backends, registered by name and imported only when used."""
from __future__ import annotations

import importlib

from edgeft.backends.base import Backend, Capabilities
from edgeft.errors import TargetError

# name -> "module:Class"; the module is imported only when the backend is used.
REGISTRY: dict[str, str] = {
    "onnxruntime-cpu": "edgeft.backends.onnxruntime_cpu:OnnxRuntimeCPU",
}

CAPABILITIES: dict[str, Capabilities] = {
    "onnxruntime-cpu": Capabilities(precisions=("fp32", "int8"), device_kinds=("cpu",),
                                    isas=("any", "avx2", "avx512_vnni", "neon")),
}


def get_backend(name: str) -> Backend:
    if name not in REGISTRY:
        raise TargetError(f"Unknown backend {name!r}. Registered: {sorted(REGISTRY)}",
                          fix="set `backend:` in the target YAML to one of the registered names")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)()
