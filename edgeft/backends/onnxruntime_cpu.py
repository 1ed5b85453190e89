"""ONNX Runtime CPU backend: graph-optimized engines saved so loading re-optimizes nothing.

The graph passes are registered units (``ort_passes``), planned from the target's config. Before ORT's
optimizer: INT8 graphs get the ORT Q/DQ flavour (``qdq_ort``; CNNs also ``qdq_ort_conv``), every graph
the attention fusion (``ort_fusions``). The engine is the graph after ONNX Runtime's own
optimizer (Q/DQ units fold into ``MatMulIntegerToFloat``/``QLinearConv``/... int8 kernels), serialized
with ``optimized_model_filepath``, then biases folded and q/k/v projections packed into the attention
node (``QAttention``/``Attention``); the runtime opens it with optimizations disabled (or only the
hardware-specific layout pass, per target). ``engine.json`` records the passes in the order they ran,
how to open the engine and where the math ran.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from edgeft.backends.base import Backend, Capabilities, copy_sidecars
from edgeft_runtime.fileio import write_json_atomic
from edgeft_runtime.session import ENGINE_JSON

INT8_OPS = {"MatMulIntegerToFloat", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul",
            "QLinearConv", "ConvInteger", "QGemm", "QAttention"}
FLOAT_COMPUTE_OPS = {"MatMul", "Gemm", "Conv", "FusedMatMul", "FusedGemm", "FusedConv", "Attention"}
LAYERS_PER_NODE = {"QAttention": 3, "Attention": 3}    # packed q, k, v projections
LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


class OnnxRuntimeCPU(Backend):
    name = "onnxruntime-cpu"
    capabilities = Capabilities(precisions=("fp32", "int8"), device_kinds=("cpu",),
                                isas=("any", "avx2", "avx512_vnni", "neon"))
    requires = ("onnxruntime", "pip install onnxruntime")

    def compile(self, onnx_path: Path, target, out_dir: Path, precision: str | None = None,
                calibration_inputs: Path | None = None) -> dict[str, Any]:
        import onnx
        import onnxruntime as ort

        from edgeft.backends import ort_passes

        self.check_available()
        out_dir.mkdir(parents=True, exist_ok=True)
        opts = target.onnxruntime
        precision = precision or target.precision
        model = onnx.load(str(onnx_path))
        pctx = ort_passes.PassContext(target, precision,
                                      feeds_from_npz(calibration_inputs) if calibration_inputs else None)
        passes = ort_passes.plan(pctx)
        records = ort_passes.run(model, [p for p in passes if not p.after_ort], pctx)
        staged = out_dir / ".ort-input.onnx"     # the rewritten graph, only until ORT has optimized it
        onnx.save(model, str(staged))
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[opts.graph_optimization_level])
        so.optimized_model_filepath = str(out_dir / "model.onnx")
        so.log_severity_level = 3
        try:
            ort.InferenceSession(str(staged), so, providers=["CPUExecutionProvider"])
        finally:
            staged.unlink()
        records.append({"name": f"onnxruntime_optimizer ({opts.graph_optimization_level})", "exact": True,
                        "result": "saved"})
        after = [p for p in passes if p.after_ort]
        if after:
            optimized = onnx.load(str(out_dir / "model.onnx"))
            records += ort_passes.run(optimized, after, pctx)
            onnx.save(optimized, str(out_dir / "model.onnx"))
        rewrites, fusions = ort_passes.summary(records)
        copy_sidecars(onnx_path.parent, out_dir)
        meta = {"backend": self.name, "target": target.name, "precision": precision, "passes": records,
                "qdq_rewrites": rewrites, "fusions": fusions, "file": "model.onnx", "threads": target.device.threads,
                "optimization_level": opts.graph_optimization_level,
                **({"int8_kernels": target.int8_kernels} if precision == "int8" else {}),
                "load_optimization_level": opts.load_optimization_level,
                "onnxruntime_version": ort.__version__, "where_it_ran": where_it_ran(out_dir / "model.onnx")}
        write_json_atomic(out_dir / ENGINE_JSON, meta)
        return meta

    def open(self, engine_dir: Path, threads: int | None = None):
        from edgeft_runtime.session import OrtSession

        return OrtSession(engine_dir, threads)


def feeds_from_npz(npz: Path, batch: int = 16) -> list[dict]:
    """Batches of model inputs from an ``.npz`` written by the export stage."""
    import numpy as np

    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files}
    n = len(next(iter(arrays.values())))
    return [{k: v[i:i + batch] for k, v in arrays.items()} for i in range(0, n, batch)]


def where_it_ran(path: Path) -> dict[str, Any]:
    """Count compute nodes in int8 kernels vs float; a silent float fallback shows up here.

    ``int8_share`` is over the layers that carry weights (MatMul/Gemm/Conv with a constant input): those
    are what quantization can move to int8. A packed attention node (``QAttention``/``Attention``) counts
    as its three q/k/v projections, so packing does not change the share. Activation x activation
    products (attention's QK^T and AV) are counted apart as ``float_activation_matmuls``.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    # a weight left in Q/DQ form (the kernel did not take it in int8) is still a weight
    weights |= {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights}
    ops = Counter(n.op_type for n in graph.node)
    int8 = sum(v * LAYERS_PER_NODE.get(k, 1) for k, v in ops.items() if k in INT8_OPS)
    float_nodes = [n for n in graph.node if n.op_type in FLOAT_COMPUTE_OPS]
    float_weight = [n for n in float_nodes if any(i in weights for i in n.input)]
    n_float = sum(LAYERS_PER_NODE.get(n.op_type, 1) for n in float_weight)
    return {"int8_compute_nodes": int8, "float_compute_nodes": n_float,
            "float_weight_layers": [n.name for n in float_weight],
            "float_activation_matmuls": len(float_nodes) - len(float_weight),
            "int8_share": round(int8 / (int8 + n_float), 4) if int8 + n_float else 0.0,
            "op_counts": dict(ops.most_common())}
