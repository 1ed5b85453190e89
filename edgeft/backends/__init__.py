"""Backends, registered by name: one class each (``base.Backend``), which carries its capabilities and
compiles, opens and times its engines. A backend's module is imported when the backend is first used
(named here, not imported), so neither this registry nor the code fingerprint of a stage that only
validates targets pulls in every backend's code."""
from __future__ import annotations

import importlib

from edgeft.backends.base import Backend, Capabilities
from edgeft.errors import TargetError

REGISTRY: dict[str, str] = {
    "onnxruntime-cpu": "edgeft.backends.onnxruntime_cpu:OnnxRuntimeCPU",
    "tensorrt": "edgeft.backends.tensorrt:TensorRT",
    "openvino-cpu": "edgeft.backends.openvino_cpu:OpenVINOCPU",
}

__all__ = ["Backend", "Capabilities", "REGISTRY", "backend_class", "get_backend"]


def backend_class(name: str) -> type[Backend]:
    if name not in REGISTRY:
        raise TargetError(f"Unknown backend {name!r}. Registered: {sorted(REGISTRY)}",
                          fix="set `backend:` in the target YAML to one of the registered names")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def get_backend(name: str) -> Backend:
    return backend_class(name)()
