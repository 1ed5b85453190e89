"""The engines ``edgeft bench RUN_DIR`` measures: the run's own, and the peers built the way their users build
them, from the same export.

| name | what |
|---|---|
| edgeft-<precision> | the target's engine (compile/<target>/engine) |
| edgeft-fp32-reference | the target's FP32 reference engine |
| edgeft-int8-u8s8, edgeft-int8-u8u8, edgeft-int8-u8s8-7bit | the run's Q/DQ export compiled for the target in another ONNX Runtime int8 kernel flavour (`onnxruntime.int8_kernels`), built into the bench folder; only on request, for ONNX Runtime int8 targets |
| edgeft-int8-dynamic-post-gelu, edgeft-int8-dynamic-all | the same with `onnxruntime.dynamic_activations` set (GEMM inputs quantized per call) |
| ort-fp32 | the optimum export (FP32) under ONNX Runtime's own optimizations (ORT_ENABLE_ALL) |
| ort-dynamic, ort-dynamic-per-channel | `onnxruntime.quantization.quantize_dynamic` of that export, int8 weights per tensor / per channel |
| ort-static | `quant_pre_process`, then `quantize_static` QDQ: per-channel int8 weights, uint8 activations, calibrated on the run's calibration inputs |
| openvino-int8, openvino-fp32 | OpenVINO's CPU runtime reading the Q/DQ and the FP32 ONNX (where `openvino` imports) |
| torch-fp32 | the fine-tuned model in PyTorch eager mode |
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np

from edgeft.errors import EdgeftError
from edgeft_runtime.bench import EngineSpec
from edgeft_runtime.fileio import read_json

# peers ORT's quantizers build with QInt8 weights at full range and uint8 activations: u8s8 kernels
U8S8_PEERS = ("ort-dynamic", "ort-dynamic-per-channel", "ort-static")
PEERS = ("ort-fp32", "ort-dynamic", "ort-dynamic-per-channel", "ort-static", "openvino-int8", "openvino-fp32", "torch-fp32")
# ONNX Runtime int8 flavours a bench can build for an ONNX Runtime int8 target on request (``--engines
# edgeft-int8-u8u8,...``): engine name -> the target's ``onnxruntime`` options it overrides
FLAVOURS = {**{f"edgeft-int8-{k.replace('_', '-')}": {"int8_kernels": k} for k in ("u8s8", "u8u8", "u8s8_7bit")},
            **{f"edgeft-int8-dynamic-{k.replace('_', '-')}": {"dynamic_activations": k} for k in ("post_gelu", "all")}}
SIDECARS = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "config.json",
            "preprocessor.json", "labels.json")


def _copy_sidecars(src: Path, dest: Path) -> None:
    for name in SIDECARS:
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)


def _limits(spec, modality: str) -> dict:
    first = next(iter(spec.input_shapes.values()))
    out = {"batch": [first.min[0], first.max[0]]}
    if modality == "text":
        out["seq"] = [first.min[1], first.max[1]]
    return out


def _peer_limits(export_dir: Path, modality: str) -> dict:
    cfg = export_dir / "config.json"
    positions = read_json(cfg).get("max_position_embeddings") if cfg.is_file() else None
    return {"seq": [1, positions]} if modality == "text" and isinstance(positions, int) else {}


def available() -> dict[str, str | None]:
    """Every engine name -> None when it can run here, else why not."""
    why = {name: None for name in ("edgeft", "edgeft-fp32-reference", *PEERS)}
    if importlib.util.find_spec("openvino") is None:
        why["openvino-int8"] = why["openvino-fp32"] = "openvino is not installed (pip install openvino)"
    if importlib.util.find_spec("torch") is None:
        why["torch-fp32"] = "torch is not installed"
    return why


class _Calibration:
    """quantize_static's data reader over the run's calibration inputs, one example at a time."""

    def __init__(self, npz: Path, names: list[str]):
        data = np.load(npz)
        self.rows = [{k: data[k][i:i + 1] for k in names if k in data} for i in range(len(data[next(iter(data))]))]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.rows):
            return None
        self.i += 1
        return self.rows[self.i - 1]

    def rewind(self):
        self.i = 0


def build_peer(name: str, fp32_onnx: Path, calibration: Path | None, dest: Path) -> Path:
    """Quantize the FP32 export as ``name`` into ``dest/model.onnx`` (the tokenizer and config copied next to it)."""
    import os

    dest.mkdir(parents=True, exist_ok=True)
    here = os.getcwd()
    os.chdir(dest)                 # ORT's shape inference drops scratch files into the current folder
    try:
        return _build_peer(name, fp32_onnx.resolve(), calibration.resolve() if calibration else None, dest.resolve())
    finally:
        os.chdir(here)


def _build_peer(name: str, fp32_onnx: Path, calibration: Path | None, dest: Path) -> Path:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    out = dest / "model.onnx"
    if name in ("ort-dynamic", "ort-dynamic-per-channel"):
        quantize_dynamic(str(fp32_onnx), str(out), weight_type=QuantType.QInt8, per_channel=name.endswith("per-channel"))
    elif name == "ort-static":           # ORT's documented recipe: pre-process, then QDQ with per-channel weights
        import onnx
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre = dest / "preprocessed.onnx"
        quant_pre_process(str(fp32_onnx), str(pre), skip_symbolic_shape=True)   # symbolic inference fails on BERT exports
        names = [i.name for i in onnx.load(str(pre), load_external_data=False).graph.input]
        quantize_static(str(pre), str(out), _Calibration(calibration, names), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
        pre.unlink()
    _copy_sidecars(fp32_onnx.parent, dest)
    return out


def target_spec(ctx, target: str | None):
    """The run's target named ``target`` (a name or the YAML path it was given), or its first."""
    from edgeft.targets import load_target

    specs = {load_target(t).name: load_target(t) for t in ctx.config.targets}
    name = target if target in specs else Path(target).stem if target else next(iter(specs))
    if name not in specs:
        raise EdgeftError(f"--target {target}: this run has no engine for it (its targets: {', '.join(specs)})",
                          fix="pass one of the run's targets")
    return specs[name]


def chosen_engines(spec, wanted: list[str] | None) -> list[str]:
    """``--engines`` resolved (``edgeft`` = the target's engine), in order, each once; refused when unknown.
    Without ``--engines``: the target's engines and every peer (kernel flavours only on request)."""
    own = f"edgeft-{spec.precision}"
    names = [own, "edgeft-fp32-reference", *PEERS]
    offered = names + (list(FLAVOURS) if spec.ort_int8 else [])
    if wanted is not None and not wanted:
        raise EdgeftError("--engines is empty", fix=f"pick from {', '.join(offered)} (comma-separated), or drop --engines")
    chosen = list(dict.fromkeys(names if not wanted else [own if w == "edgeft" else w for w in wanted]))
    unknown = [w for w in chosen if w not in offered]
    if unknown:
        why = (f" (kernel flavours are for ONNX Runtime int8 targets; {spec.name} is {spec.backend} {spec.precision})"
               if unknown[0] in FLAVOURS else "")
        raise EdgeftError(f"--engines: unknown engine {unknown[0]!r}{why}", fix=f"pick from {', '.join(offered)}")
    return chosen


def build_flavour(ctx, spec, options: dict, dest: Path) -> tuple[Path, dict]:
    """The run's Q/DQ export compiled for ``spec`` with its ``onnxruntime`` options updated by ``options``."""
    from edgeft.backends.onnxruntime_cpu import OnnxRuntimeCPU

    meta = OnnxRuntimeCPU().compile(ctx.require("export.int8_onnx"), spec.with_ort(**options), dest, precision="int8",
                                    calibration_inputs=ctx.require("export.calibration_inputs"))
    return dest / meta["file"], meta


def planned_limits(ctx, spec, chosen: list[str]) -> list[EngineSpec]:
    """The shape limits of the engines ``chosen`` would build, known before building them."""
    facts = ctx.facts()
    own = _limits(spec, facts.modality)
    peers = _peer_limits(ctx.require("export.fp32_onnx").parent, facts.modality)
    return [EngineSpec(n, "", "", limits=own if n.startswith("edgeft") else peers) for n in chosen]


SATURATES = "u8s8 kernels on this CPU add products in pairs into int16 and saturate: not its accuracy on a VNNI CPU"


def _saturating(spec, names: list[str]) -> tuple[list[str], str]:
    """The u8s8 engines among ``names`` when this CPU's u8s8 kernels add pairs into int16 (AVX2, AVX512 without
    VNNI), and its ISA class: their outputs here are not what they compute on a VNNI device, so the bench marks
    them rather than passing a fast, wrong engine as a finding."""
    from edgeft_runtime.bundle import SATURATING_U8S8
    from edgeft_runtime.hostinfo import current

    host = current()
    if host.isa_class not in SATURATING_U8S8:
        return [], host.isa_class
    own = f"edgeft-{spec.precision}"
    return [n for n in names if (n in FLAVOURS and FLAVOURS[n].get("int8_kernels", spec.int8_kernels) == "u8s8")
            or (n == own and spec.ort_int8 and spec.int8_kernels == "u8s8")
            or n in U8S8_PEERS], host.isa_class


def run_engines(ctx, spec, chosen: list[str], work: Path, log=print):
    """The engine specs of ``chosen`` for ``spec``'s target (peers built into ``work``), and notes on engines left out."""
    facts = ctx.facts()
    why = available()
    own = f"edgeft-{spec.precision}"
    notes, engines = [], []
    limits = _limits(spec, facts.modality)
    export_fp32 = ctx.require("export.fp32_onnx")
    peer_limits = _peer_limits(export_fp32.parent, facts.modality)
    for n in chosen:
        reason = why.get("edgeft" if n == own else n)
        if reason:
            notes.append(f"{n}: left out, {reason}")
            continue
        if n in (own, "edgeft-fp32-reference"):
            d = ctx.require("compile.engine", target=spec.name, role="engine" if n == own else "fp32-reference")
            meta = read_json(d / "engine.json")
            if meta.get("deferred"):
                notes.append(f"{n}: left out, a TensorRT build kit (no engine was built here); bench it on the device "
                             "with `edgeft-runtime bench BUNDLE`")
                continue
            flavour = f", int8_kernels {meta['int8_kernels']}" if meta.get("int8_kernels") else ""
            engines.append(EngineSpec(n, "engine_dir", str(d), str(d), (d / meta["file"]).stat().st_size, limits,
                                      note=f"{meta['backend']}, {meta['precision']}{flavour}"))
        elif n in FLAVOURS:
            log(f"bench: compiling {n} from the run's Q/DQ export")
            model, meta = build_flavour(ctx, spec, FLAVOURS[n], work / "engines" / n)
            opts = ", ".join(f"{k} {v}" for k, v in FLAVOURS[n].items())
            engines.append(EngineSpec(n, "engine_dir", str(model.parent), str(model.parent), model.stat().st_size, limits,
                                      note=f"{meta['backend']}, int8, int8_kernels {meta['int8_kernels']}"
                                           + ("" if "int8_kernels" in FLAVOURS[n] else f", {opts}")))
        elif n == "ort-fp32":
            engines.append(EngineSpec(n, "onnx", str(export_fp32), str(export_fp32.parent), export_fp32.stat().st_size,
                                      peer_limits, note="optimum export, ORT_ENABLE_ALL at load", extra={"optimization": "all"}))
        elif n.startswith("ort-"):
            log(f"bench: building {n} from the FP32 export")
            calib = ctx.require("export.calibration_inputs") if n == "ort-static" else None
            model = build_peer(n, export_fp32, calib, work / "engines" / n)
            engines.append(EngineSpec(n, "onnx", str(model), str(model.parent), model.stat().st_size, peer_limits,
                                      note={"ort-dynamic": "quantize_dynamic, QInt8 weights per tensor",
                                            "ort-dynamic-per-channel": "quantize_dynamic, QInt8 weights per channel",
                                            "ort-static": "quant_pre_process + quantize_static QDQ, per-channel QInt8 weights, run's calibration inputs"}[n],
                                      extra={"optimization": "all"}))
        elif n.startswith("openvino-"):
            src = ctx.require("export.int8_onnx") if n.endswith("int8") else export_fp32
            engines.append(EngineSpec(n, "openvino", str(src), str(src.parent), src.stat().st_size, peer_limits,
                                      note=f"OpenVINO CPU reading the {'Q/DQ' if n.endswith('int8') else 'FP32'} ONNX; "
                                           "float layers in OpenVINO's default precision for this CPU (BF16 where "
                                           "the CPU has it)"))
        elif n == "torch-fp32":
            base = ctx.require("finetune.baseline")
            size = sum(p.stat().st_size for p in base.glob("*.safetensors")) or None
            engines.append(EngineSpec(n, "adapter", str(ctx.run_dir), str(export_fp32.parent), size, peer_limits,
                                      note="PyTorch eager, the fine-tuned baseline",
                                      extra={"adapter": "edgeft.benchmark.torch_engine:session"}))
    saturating, isa = _saturating(spec, [e.name for e in engines])
    for e in engines:
        if e.name in saturating:
            e.caveat = SATURATES
            notes.append(f"{e.name}: u8s8 kernels on this CPU ({isa}, no VNNI) add u8 x s8 products in pairs into "
                         "int16, which saturates: its outputs and accuracy here differ from a VNNI CPU's (u8u8 or "
                         "u8s8-7bit avoid it)")
    if not engines:
        raise EdgeftError("no engine to benchmark here: " + "; ".join(notes), fix="pick engines that run on this host")
    return engines, notes
