"""Engine sessions behind one small protocol: ONNX Runtime, TensorRT (Polygraphy), OpenVINO. Torch-free."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Protocol

import numpy as np

from edgeft_runtime.fileio import read_json

ENGINE_JSON = "engine.json"


class Session(Protocol):
    input_names: list[str]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class OrtSession:
    """Opens a compiled ONNX Runtime engine exactly as ``engine.json`` says: no re-optimization, unless
    it asks for ORT's hardware-specific layout transforms at load (``load_optimization_level: all``)."""

    def __init__(self, engine_dir: Path, threads: int | None = None):
        import onnxruntime as ort

        self.dir = Path(engine_dir)
        self.meta = read_json(self.dir / ENGINE_JSON)
        so = ort.SessionOptions()
        so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                                       if self.meta.get("load_optimization_level") == "all"
                                       else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        n = self.meta.get("threads", 0) if threads is None else threads
        if n:
            so.intra_op_num_threads = n
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.dir / self.meta["file"]), so,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {k: feeds[k] for k in self.input_names})
        return dict(zip(self.output_names, outs))


class TrtSession:
    """Runs a serialized TensorRT engine through polygraphy's TrtRunner (numpy in, numpy out)."""

    def __init__(self, engine_dir: Path):
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        self.dir = Path(engine_dir)
        self.meta = read_json(self.dir / ENGINE_JSON)
        self.runner = TrtRunner(EngineFromBytes(BytesFromPath(str(self.dir / self.meta["file"]))))
        self.runner.activate()
        meta = self.runner.get_input_metadata()
        self.input_names = list(meta.keys())

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.runner.infer({k: np.ascontiguousarray(feeds[k]) for k in self.input_names})
        return {k: np.asarray(v) for k, v in out.items()}

    def close(self) -> None:
        """Release the engine's CUDA context (Polygraphy warns on stdout about a runner never deactivated)."""
        if getattr(self.runner, "is_active", True):
            self.runner.deactivate()


def check_engine_folder(engine_dir: Path) -> dict:
    """engine.json of an engine folder, or EdgeftError naming what is missing and which folder to pass."""
    from edgeft_runtime.errors import EdgeftError

    folder = Path(engine_dir)
    fix = "pass an engine folder: RUN_DIR/compile/<target>/engine (or .../fp32-reference)"
    if not folder.is_dir():
        raise EdgeftError(f"{folder} is not a folder", fix=fix)
    if not (folder / ENGINE_JSON).is_file():
        raise EdgeftError(f"{folder} is not an engine folder (no {ENGINE_JSON})", fix=fix)
    meta = read_json(folder / ENGINE_JSON)
    needed = [meta.get("file", "model.onnx"), "labels.json"]
    if not (folder / "preprocessor.json").is_file():          # text engines carry their tokenizer
        needed.append("tokenizer.json")
    missing = [n for n in needed if not (folder / n).is_file()]
    if missing:
        raise EdgeftError(f"{folder} lacks {', '.join(missing)}",
                          fix="copy the whole engine folder that compile wrote (every file in it is needed)")
    return meta


def runtime_of(engine_dir: Path) -> str:
    """The backend that opens this engine folder: ``engine.json``'s ``runtime`` (a deferred TensorRT kit
    names onnxruntime-cpu, which checks its ONNX), else its ``backend``."""
    meta = read_json(Path(engine_dir) / ENGINE_JSON)
    return meta.get("runtime", meta["backend"])


class OpenVINOSession:
    """Opens an OpenVINO IR engine (``model.xml``) on the CPU with ``engine.json``'s threads and inference
    precision hint (``f32`` pins an FP32 reference; ``default`` is OpenVINO's choice for this CPU)."""

    def __init__(self, engine_dir: Path, threads: int | None = None):
        import openvino as ov

        self.dir = Path(engine_dir)
        self.meta = read_json(self.dir / ENGINE_JSON)
        config = {}
        n = self.meta.get("threads", 0) if threads is None else threads
        if n:
            config["INFERENCE_NUM_THREADS"] = n
        if self.meta.get("inference_precision") == "f32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        core = ov.Core()
        self.model = core.compile_model(core.read_model(str(self.dir / self.meta["file"])), "CPU", config)
        self.request = self.model.create_infer_request()
        self.input_names = [i.any_name for i in self.model.inputs]
        self.output_names = [o.any_name for o in self.model.outputs]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = self.request.infer({k: feeds[k] for k in self.input_names})
        return {name: np.asarray(v) for name, v in zip(self.output_names, res.values())}

    def runtime_precisions(self, by_layer: bool = False):
        """(layer type, runtime precision) per layer of the execution graph (or their counts)."""
        from collections import Counter

        rows = []
        for op in self.model.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            rows.append((info["layerType"].astype(str), info["runtimePrecision"].astype(str)))
        return rows if by_layer else dict(Counter(p for _, p in rows))


SESSIONS = {"onnxruntime-cpu": OrtSession, "tensorrt": TrtSession, "openvino-cpu": OpenVINOSession}


def open_engine(engine_dir: Path, threads: int | None = None) -> Session:
    """Open what compile wrote with the session class of its runtime (edgeft's backends open through these
    same classes, so the device and verify run an engine the same way)."""
    from edgeft_runtime.errors import EdgeftError

    name = runtime_of(engine_dir)
    if name not in SESSIONS:
        raise EdgeftError(f"{engine_dir}: this runtime cannot open {name!r} engines (it opens {sorted(SESSIONS)})",
                          fix="upgrade edgeft-runtime to the version the bundle was made with")
    try:
        if name == "tensorrt":
            return TrtSession(Path(engine_dir))
        return SESSIONS[name](Path(engine_dir), threads)
    except ImportError as e:                  # an optional runtime this engine needs is not installed
        extra = {"tensorrt": "tensorrt", "openvino-cpu": "openvino"}.get(name)
        raise EdgeftError(f"{engine_dir} is a {name} engine and {e.name or 'a package it needs'} is not installed here",
                          fix=f"pip install 'edgeft-runtime[{extra}]'" if extra else "pip install onnxruntime") from None
