"""OpenVINO CPU backend (optional extra ``edgeft[openvino]``): the Q/DQ ONNX read by OpenVINO, saved as IR.

OpenVINO's low-precision transformations turn the Q/DQ pairs of the exported graph into int8 kernels when
the model is compiled for the CPU (on the device, at load); compile here converts the ONNX to OpenVINO's
IR (``model.xml`` + ``model.bin``, weights kept as they are) and compiles it once on this host to record
where the math runs: OpenVINO's runtime precision per layer (its execution graph). Float layers of the INT8
engine run in OpenVINO's default inference precision for the CPU (BF16 where the CPU has it, FP32 otherwise);
the FP32 reference is pinned to FP32 so it stays a reference. ``engine.json`` records the hint.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from edgeft.backends.base import Backend, Capabilities, copy_sidecars
from edgeft_runtime.fileio import write_json_atomic
from edgeft_runtime.session import ENGINE_JSON

WEIGHT_LAYERS = {"FullyConnected", "MatMul", "Convolution", "GroupConvolution", "Gemm"}
INT8 = {"i8", "u8"}


class OpenVINOCPU(Backend):
    name = "openvino-cpu"
    capabilities = Capabilities(precisions=("fp32", "int8"), device_kinds=("cpu",),
                                isas=("any", "avx2", "avx512_vnni"))
    requires = ("openvino", "pip install 'edgeft[openvino]'")

    def compile(self, onnx_path: Path, target, out_dir: Path, precision: str | None = None,
                calibration_inputs: Path | None = None) -> dict[str, Any]:
        """The Q/DQ graph as it is: OpenVINO calibrates nothing, its int8 kernels use the exported scales."""
        self.check_available()
        import openvino as ov

        precision = precision or target.precision
        out_dir.mkdir(parents=True, exist_ok=True)
        model = ov.convert_model(str(onnx_path))
        ov.save_model(model, str(out_dir / "model.xml"), compress_to_fp16=False)
        copy_sidecars(onnx_path.parent, out_dir)
        hint = "f32" if precision == "fp32" else "default"
        meta: dict[str, Any] = {"backend": self.name, "runtime": self.name, "target": target.name, "precision": precision,
                                "file": "model.xml", "threads": target.device.threads, "inference_precision": hint,
                                "openvino": ov.__version__}
        write_json_atomic(out_dir / ENGINE_JSON, meta)
        from edgeft_runtime.session import OpenVINOSession

        meta["where_it_ran"] = where_it_ran(OpenVINOSession(out_dir).runtime_precisions(by_layer=True))
        write_json_atomic(out_dir / ENGINE_JSON, meta)
        return meta

    def open(self, engine_dir: Path, threads: int | None = None):
        from edgeft_runtime.session import OpenVINOSession

        self.check_available()
        return OpenVINOSession(engine_dir, threads)


def where_it_ran(layers: list[tuple[str, str]]) -> dict[str, Any]:
    """From (layer type, runtime precision) of every layer of OpenVINO's execution graph: weight-carrying layers
    in int8 vs float, and the count of layers per runtime precision on this CPU."""
    weights = [(t, p) for t, p in layers if t in WEIGHT_LAYERS]
    int8 = sum(p in INT8 for _, p in weights)
    return {"int8_compute_nodes": int8, "float_compute_nodes": len(weights) - int8,
            "int8_share": round(int8 / len(weights), 4) if weights else 0.0,
            "runtime_precisions": dict(Counter(p for _, p in layers).most_common()),
            "op_counts": dict(Counter(f"{t}:{p}" for t, p in weights).most_common()),
            "note": "OpenVINO execution graph on the compiling host"}
