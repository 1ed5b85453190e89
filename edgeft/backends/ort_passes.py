"""The ONNX Runtime backend's graph passes, each a registered class (after Olive's graph-surgery
``Surgeon`` registry): a name, whether it is exact, where it runs (before or after ONNX Runtime's own
optimizer), when it applies to a target, and the rewrite itself (in ``qdq_ort``, ``qdq_ort_conv``,
``ort_fusions``). ``plan`` composes the list for a target from its config; ``engine.json`` records the
passes that ran, in order, with what each changed.

``exact`` means the pass computes the same values as the graph it was given (float rounding aside);
a pass that is not exact says in its docstring what it changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from edgeft.backends import ort_fusions, qdq_ort, qdq_ort_conv
from edgeft.backends.onnx_graph import constants

PASSES: dict[str, type["GraphPass"]] = {}


def register(cls: type["GraphPass"]) -> type["GraphPass"]:
    if cls.name in PASSES:
        raise ValueError(f"graph pass {cls.name!r} registered twice")
    PASSES[cls.name] = cls
    return cls


@dataclass
class PassContext:
    """What a pass may need besides the graph."""
    target: Any                                   # TargetSpec (or anything with its onnxruntime options)
    precision: str
    calibration_feeds: list[dict] | None = None   # batches of model inputs, for passes that calibrate
    results: dict[str, Any] = field(default_factory=dict)


class GraphPass:
    """A rewrite: ``function`` called on the model, its graph, or the graph and its
    constants (``takes``); a pass with other needs overrides ``__call__``."""
    name: ClassVar[str]
    exact: ClassVar[bool]
    after_ort: ClassVar[bool] = False             # needs ORT's fused int8 kernels in place
    function: ClassVar[Callable[..., Any]]
    takes: ClassVar[str] = "graph"                # "graph", "graph+constants" or "model"

    @classmethod
    def applies(cls, ctx: PassContext) -> bool:
        return ctx.precision == "int8"

    def __call__(self, model, ctx: PassContext) -> Any:
        fn = self.function
        if self.takes == "model":
            return fn(model)
        if self.takes == "graph+constants":
            return fn(model.graph, constants(model.graph))
        return fn(model.graph)


@register
class DedupeQDQ(GraphPass):
    """Identical activation Q/DQ nodes on one tensor (ModelOpt's q, k, v input quantizers) become one."""
    name, exact = "dedupe_qdq", True
    function, takes = staticmethod(qdq_ort.dedupe), "graph+constants"


@register
class GemmBiasInt32(GraphPass):
    """Gemm biases on the int32 ``s_x * s_w`` grid, so ORT runs ``QGemm`` (the bias is rounded to that grid)."""
    name, exact = "gemm_bias_int32", False
    function, takes = staticmethod(qdq_ort.quantize_gemm_bias), "graph"


@register
class CompleteConvQDQ(GraphPass):
    """CNNs: BatchNorm folded, one quantizer per tensor, output quantizers added and calibrated on the
    export's calibration inputs (new quantization points: not exact)."""
    name, exact = "complete_conv_qdq", False

    def __call__(self, model, ctx):
        if not qdq_ort_conv.has_quantized_conv(model.graph):
            return {"skipped": "no quantized Conv"}
        if not ctx.calibration_feeds:
            return {"skipped": "no calibration inputs (export/int8/calibration_inputs.npz)"}
        return qdq_ort_conv.complete_conv_qdq(model, ctx.calibration_feeds)


@register
class ActivationsToUint8(GraphPass):
    """Signed activations at zero point 0 -> uint8 at 128 (Relu outputs at 0): the same grid points."""
    name, exact = "activations_to_uint8", True
    function, takes = staticmethod(qdq_ort.to_unsigned_activations), "graph+constants"


@register
class WeightsToUint8(GraphPass):
    """u8u8 targets (x86 without VNNI): weights stored as uint8 at zero point 128, the same values."""
    name, exact = "weights_to_uint8", True
    function, takes = staticmethod(qdq_ort.weights_to_unsigned), "graph+constants"

    @classmethod
    def applies(cls, ctx):
        return ctx.precision == "int8" and ctx.target.int8_kernels == "u8u8"


@register
class WeightsTo7Bit(GraphPass):
    """``u8s8_7bit`` targets: weights re-gridded to 7 bits (ORT's reduce_range) so x86 CPUs without VNNI run
    the u8s8 kernels without int16 saturation; each weight moves by at most one 8-bit step."""
    name, exact = "weights_to_7bit", False
    function, takes = staticmethod(qdq_ort.weights_to_7bit), "graph+constants"

    @classmethod
    def applies(cls, ctx):
        return ctx.precision == "int8" and ctx.target.int8_kernels == "u8s8_7bit"


@register
class Int8EmbeddingTables(GraphPass):
    """Large embedding tables stored int8 per row: exact for tables finetune put on that grid, which it
    does; the largest difference is recorded."""
    name, exact = "int8_embedding_tables", False
    function, takes = staticmethod(qdq_ort.int8_embedding_tables), "graph"

    @classmethod
    def applies(cls, ctx):
        return ctx.precision == "int8" and ctx.target.onnxruntime.int8_embeddings


@register
class FuseAttention(GraphPass):
    """Transformer attention (q/k/v reshape, QKᵀ, mask, softmax, ·V) -> ``MultiHeadAttention``."""
    name, exact = "fuse_attention", True
    function, takes = staticmethod(ort_fusions.fuse_attention), "model"

    @classmethod
    def applies(cls, ctx):
        return ctx.target.onnxruntime.fuse_attention


@register
class FoldBiasIntoInt8MatMul(GraphPass):
    """``Add(MatMulIntegerToFloat, bias)`` -> the kernel's own bias input."""
    name, exact, after_ort = "fold_bias_into_int8_matmul", True, True
    function, takes = staticmethod(qdq_ort.fold_bias_into_matmul_integer), "model"


@register
class DynamicActivations(GraphPass):
    """``onnxruntime.dynamic_activations``: chosen int8 GEMMs quantize their input per call
    (``DynamicQuantizeMatMul``) instead of on the calibrated grid; not exact. Runs after the q/k/v packing,
    so ``QAttention`` keeps its calibrated input."""
    name, exact, after_ort = "dynamic_activations", False, True

    @classmethod
    def applies(cls, ctx):
        return ctx.precision == "int8" and ctx.target.onnxruntime.dynamic_activations != "none"

    def __call__(self, model, ctx):
        return qdq_ort.dynamic_activations(model, ctx.target.onnxruntime.dynamic_activations)


@register
class PackQKVAttention(GraphPass):
    """Attention and its q/k/v projections -> one ``QAttention``/``Attention`` node (one GEMM)."""
    name, exact, after_ort = "pack_qkv_attention", True, True
    function, takes = staticmethod(ort_fusions.pack_attention), "model"

    @classmethod
    def applies(cls, ctx):
        return ctx.target.onnxruntime.fuse_attention


ORDER = ("dedupe_qdq", "weights_to_7bit", "gemm_bias_int32", "complete_conv_qdq", "activations_to_uint8", "weights_to_uint8",
         "int8_embedding_tables", "fuse_attention", "fold_bias_into_int8_matmul", "pack_qkv_attention",
         "dynamic_activations")


def plan(ctx: PassContext) -> list[type[GraphPass]]:
    """The passes for this target and precision, in order (before-ORT ones first)."""
    return [PASSES[n] for n in ORDER if PASSES[n].applies(ctx)]


def run(model, passes: list[type[GraphPass]], ctx: PassContext) -> list[dict[str, Any]]:
    """Apply ``passes`` in place; one record per pass: name, exact, what it changed."""
    out = []
    for cls in passes:
        result = cls()(model, ctx)
        ctx.results[cls.name] = result
        out.append({"name": cls.name, "exact": cls.exact, "result": result})
    return out


# engine.json's summary keys (kept stable for readers of earlier engines): pass name -> key
_COUNT_KEYS = {"dedupe_qdq": "duplicate_qdq_removed", "gemm_bias_int32": "gemm_bias_int32",
               "activations_to_uint8": "activations_to_uint8", "weights_to_uint8": "weights_to_uint8",
               "fold_bias_into_int8_matmul": "bias_folded_into_int8_matmul",
               "dynamic_activations": "dynamic_activation_gemms"}


def summary(records: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``qdq_rewrites`` and ``fusions`` of engine.json from the pass records."""
    rewrites: dict[str, Any] = {}
    fusions: dict[str, Any] = {}
    for r in records:
        name, result = r["name"], r["result"]
        if name in _COUNT_KEYS:
            rewrites[_COUNT_KEYS[name]] = result
        elif name == "complete_conv_qdq":
            if "skipped" in result:
                if result["skipped"] != "no quantized Conv":
                    rewrites["conv_qdq_completion"] = "skipped: " + result["skipped"]
            else:
                rewrites.update(result)
        elif name in ("int8_embedding_tables", "weights_to_7bit"):
            rewrites.update(result)
        elif name == "fuse_attention":
            fusions["attention"] = result
        elif name == "pack_qkv_attention":
            fusions["packed_qkv_attention"] = result["int8"] + result["float"]
    return rewrites, fusions


def rewrite_for_ort(model, int8_embeddings: bool = True, calibration_feeds: list[dict] | None = None,
                    int8_kernels: str = "u8s8") -> dict[str, Any]:
    """The INT8 passes that run before ONNX Runtime's optimizer (``ort_passes``), in place on an
    ``onnx.ModelProto``, for code that has a graph and no target; returns what changed."""
    from types import SimpleNamespace

    target = SimpleNamespace(int8_kernels=int8_kernels,
                             onnxruntime=SimpleNamespace(int8_embeddings=int8_embeddings, fuse_attention=False,
                                                         dynamic_activations="none"))
    ctx = PassContext(target, "int8", calibration_feeds)
    passes = [p for p in plan(ctx) if not p.after_ort]
    return summary(run(model, passes, ctx))[0]
