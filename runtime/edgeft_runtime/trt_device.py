"""A TensorRT bundle on a device with TensorRT: build the engine from the bundle's kit, exactly with the
kit's ``settings.json`` and its own ``build_engine.py`` (the file edgeft compile runs), once per device.

The engine and the timing cache go to ``$EDGEFT_RUNTIME_CACHE`` (default ``~/.cache/edgeft-runtime``), in a
folder named after the kit's ONNX sha256, TensorRT version and GPU: the bundle itself stays byte-for-byte
what was signed and checked.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
from pathlib import Path

from edgeft_runtime.errors import EdgeftError
from edgeft_runtime.fileio import write_json_atomic


def tensorrt_version() -> str | None:
    try:
        import tensorrt
    except ImportError:
        return None
    return tensorrt.__version__


def cache_root() -> Path:
    return Path(os.environ.get("EDGEFT_RUNTIME_CACHE", Path.home() / ".cache" / "edgeft-runtime"))


def _load_kit_builder(kit: Path):
    """The kit's build_engine.py as a module, without writing __pycache__ into the bundle (an added file would
    make every later check refuse it)."""
    spec = importlib.util.spec_from_file_location("edgeft_bundle_build_engine", kit / "build_engine.py")
    module = importlib.util.module_from_spec(spec)
    before, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = before
    return module


def build_from_kit(bundle) -> Path:
    """The folder of the engine built from ``bundle``'s kit on this device (built now unless cached);
    EdgeftError naming what is missing when TensorRT or a GPU is not there."""
    version = tensorrt_version()
    if version is None:
        raise EdgeftError(f"{bundle.meta['name']} is a TensorRT bundle (a build kit) and TensorRT is not importable here",
                          fix="run it on the device with TensorRT's Python bindings (JetPack 6.1+ on Jetson, or "
                              "`pip install tensorrt` on x86 with an NVIDIA GPU) and `pip install polygraphy`")
    kit = bundle.engine_dir
    builder = _load_kit_builder(kit)           # checked with every other file when the bundle was opened
    sha = {f["path"]: f["sha256"] for f in bundle.meta["files"]}
    d = bundle.meta["engine"]["dir"]
    key = hashlib.sha256((sha[f"{d}/model.onnx"] + sha[f"{d}/settings.json"]).encode()).hexdigest()[:16]
    gpu = re.sub(r"[^A-Za-z0-9._-]+", "-", builder._gpu_name()).strip("-") or "unknown"
    out = cache_root() / f"{bundle.meta['name']}-{key}-trt{version}-{gpu}"
    if (out / "engine.json").is_file():        # written last: a folder without it is an interrupted build
        return out
    settings = json.loads((kit / "settings.json").read_text())
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")     # built aside, renamed into place: no half engine
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        info = builder.build(kit / "model.onnx", tmp, settings, tmp / "timing.cache")
        write_json_atomic(tmp / "engine.json", {"backend": "tensorrt", "runtime": "tensorrt", "file": "model.engine",
                                                "precision": settings["precision"], "tensorrt": info["tensorrt_version"],
                                                "gpu": info["gpu"], "by_precision": info["by_precision"]})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except (RuntimeError, TypeError, AttributeError, OSError) as err:
        raise EdgeftError(f"TensorRT {version} could not build {bundle.meta['name']}'s engine here: "
                          f"{str(err).splitlines()[0][:300]}",
                          fix="check the GPU and driver (nvidia-smi), that TensorRT is 10 or newer, and that "
                              f"{cache_root()} is writable (EDGEFT_RUNTIME_CACHE)") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"built {out / 'model.engine'} with TensorRT {version} on {info['gpu']} in {info['build_seconds']}s",
          file=sys.stderr, flush=True)              # stdout stays machine-readable (check --json, predict)
    return out
