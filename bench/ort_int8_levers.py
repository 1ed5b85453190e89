"""The speed levers for the transformer INT8 engine on ONNX Runtime's CPU kernels, one encoder layer's
pieces at a time (all-MiniLM-L6 shapes: hidden 384, 12 heads, FFN 1536; batch 1, sequence 128).

    python bench/ort_int8_levers.py [--rounds 7] [--threads 2] [--seq 128]

Each case is a small ONNX graph with random int8 weights; the cases of a group run in the same process,
interleaved round by round, and the medians of the per-round p50s are printed with the host (CPU model and
ISA flags). Groups:

- ffn: the FFN up-projection and GELU as the engine runs them (``MatMulIntegerToFloat`` + ``BiasGelu`` +
  ``QuantizeLinear`` to the down-projection's uint8 input) against a requantizing ``QLinearMatMul`` whose
  uint8 output goes through GELU as a 256-entry lookup table (``Cast`` + ``Gather``: ORT has no general
  uint8 lookup op), and each piece alone.
- attention: ``QAttention`` (int8 q/k/v GEMM, float attention core) against the q/k/v GEMM alone (what the
  float core costs), an int8 core from ORT ops (``MatMulInteger`` for QK^T and AV, float softmax, probabilities
  on a 1/255 grid) and ORT's ``MultiHeadAttention`` after the same GEMM, with and without a padding mask.
- mask: ``QAttention``'s padding mask as [batch, seq] (what the engine passes), as key lengths [batch], skipped
  by an ``If`` when it is all ones, and
  absent; their outputs are compared on a right-padded input first.

Prints one JSON line at the end (host, per-case µs) after the table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

D, H, FFN = 384, 12, 1536


def _model(nodes, inits, inputs, out_type):
    from onnx import helper as h

    g = h.make_graph(nodes, "g", inputs, [h.make_tensor_value_info("y", out_type, None)], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    return m.SerializeToString()


def _c(value, name):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value), name)


def ffn_cases(seq: int, rng) -> tuple[dict, dict]:
    from onnx import TensorProto as T
    from onnx import helper as h

    w = rng.integers(-127, 128, (D, FFN)).astype(np.int8)
    base = [_c(w, "W"), _c(rng.random(FFN).astype(np.float32) * 0.01 + 0.001, "ws"), _c(np.float32(0.05), "as"),
            _c(np.uint8(128), "azp"), _c(rng.standard_normal(FFN).astype(np.float32), "b"),
            _c(np.float32(0.02), "ys"), _c(np.uint8(10), "yzp"), _c(np.zeros(FFN, np.int8), "wzp")]
    table = [_c(rng.integers(0, 255, 256).astype(np.uint8), "table")]
    x = h.make_tensor_value_info("x", T.UINT8, [1, seq, D])
    qlmm = h.make_node("QLinearMatMul", ["x", "as", "azp", "W", "ws", "wzp", "ys", "yzp"], ["q"])
    lut = [h.make_node("Cast", ["q"], ["qi"], to=T.INT32), h.make_node("Gather", ["table", "qi"], ["y"])]
    cases = {
        "engine: MatMulIntegerToFloat+BiasGelu+QuantizeLinear": _model(
            [h.make_node("MatMulIntegerToFloat", ["x", "W", "as", "ws", "azp", "", ""], ["mm"], domain="com.microsoft"),
             h.make_node("BiasGelu", ["mm", "b"], ["g"], domain="com.microsoft"),
             h.make_node("QuantizeLinear", ["g", "ys", "yzp"], ["y"])], base, [x], T.UINT8),
        "QLinearMatMul (uint8 out) + GELU table (Cast+Gather)": _model([qlmm, *lut], base + table, [x], T.UINT8),
        "MatMulIntegerToFloat alone (float out, bias)": _model([h.make_node(
            "MatMulIntegerToFloat", ["x", "W", "as", "ws", "azp", "", "b"], ["y"], domain="com.microsoft")], base, [x], T.FLOAT),
        "QLinearMatMul alone (uint8 out)": _model([h.make_node(
            "QLinearMatMul", ["x", "as", "azp", "W", "ws", "wzp", "ys", "yzp"], ["y"])], base, [x], T.UINT8),
    }
    xv = rng.integers(0, 255, (1, seq, D)).astype(np.uint8)
    return cases, {k: {"x": xv} for k in cases}


def attention_cases(seq: int, rng) -> tuple[dict, dict]:
    from onnx import TensorProto as T
    from onnx import helper as h

    dh = D // H
    base = [_c(rng.integers(-127, 128, (D, 3 * D)).astype(np.int8), "W"),
            _c(rng.random(3 * D).astype(np.float32) * 0.002 + 0.0005, "ws"), _c(np.float32(0.05), "as"),
            _c(np.uint8(128), "azp"), _c(rng.standard_normal(3 * D).astype(np.float32) * 0.1, "b"), _c(np.int8(0), "wzp")]
    x = h.make_tensor_value_info("x", T.UINT8, [1, seq, D])
    mask = h.make_tensor_value_info("mask", T.INT32, [1, seq])
    lens = h.make_tensor_value_info("lens", T.INT32, [1])
    gemm = h.make_node("MatMulIntegerToFloat", ["x", "W", "as", "ws", "azp", "", "b"], ["qkv"], domain="com.microsoft")
    qatt = lambda m: h.make_node("QAttention", ["x", "W", "b", "as", "ws", m, "azp", "wzp"], ["y"],  # noqa: E731
                                 domain="com.microsoft", num_heads=H)
    core = [_c(np.array([1, seq, 3, H, dh], np.int64), "s5"), _c(np.float32(0.05), "qs"), _c(np.uint8(128), "qz"),
            _c(np.float32(0.05 * 0.05 / np.sqrt(dh)), "sc"), _c(np.float32(1 / 255), "ps"), _c(np.uint8(0), "pz"),
            _c(np.float32(0.05 / 255), "os"), _c(np.array([1, seq, D], np.int64), "s3"),
            _c(np.zeros((1, 1, seq), np.float32), "madd")]
    int8_core = [gemm, h.make_node("QuantizeLinear", ["qkv", "qs", "qz"], ["qkv8"]),
                 h.make_node("Reshape", ["qkv8", "s5"], ["r"]), h.make_node("Transpose", ["r"], ["t"], perm=[2, 0, 3, 1, 4]),
                 h.make_node("Split", ["t"], ["q0", "k0", "v0"], axis=0),
                 h.make_node("Squeeze", ["q0"], ["q"]), h.make_node("Squeeze", ["k0"], ["k"]),
                 h.make_node("Squeeze", ["v0"], ["v"]), h.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
                 h.make_node("MatMulInteger", ["q", "kt", "qz", "qz"], ["s32"]),
                 h.make_node("Cast", ["s32"], ["sf"], to=T.FLOAT), h.make_node("Mul", ["sf", "sc"], ["ss"]),
                 h.make_node("Add", ["ss", "madd"], ["sm"]), h.make_node("Softmax", ["sm"], ["p"], axis=-1),
                 h.make_node("QuantizeLinear", ["p", "ps", "pz"], ["p8"]),
                 h.make_node("MatMulInteger", ["p8", "v", "pz", "qz"], ["o32"]),
                 h.make_node("Cast", ["o32"], ["of"], to=T.FLOAT), h.make_node("Mul", ["of", "os"], ["o"]),
                 h.make_node("Transpose", ["o"], ["ot"], perm=[1, 0, 2]), h.make_node("Reshape", ["ot", "s3"], ["y"])]
    # the mask only matters when it masks something: skip it at run time when every entry is 1 (batch 1, and any
    # batch without padding), which is exact
    one = _c(np.int32(1), "one")
    branch = lambda m, out: h.make_graph([h.make_node(  # noqa: E731
        "QAttention", ["x", "W", "b", "as", "ws", m, "azp", "wzp"], [out], domain="com.microsoft", num_heads=H)],
        f"b{out}", [], [h.make_tensor_value_info(out, T.FLOAT, None)])
    skip_mask = [h.make_node("ReduceMin", ["mask"], ["mmin"], keepdims=0),
                 h.make_node("Equal", ["mmin", "one"], ["full"]),
                 h.make_node("If", ["full"], ["y"], then_branch=branch("", "yt"), else_branch=branch("mask", "ye"))]
    split = h.make_node("Split", ["qkv"], ["q", "k", "v"], axis=-1)
    mha = lambda ins: h.make_node("MultiHeadAttention", ins, ["y"], domain="com.microsoft", num_heads=H)  # noqa: E731
    cases = {
        "engine: QAttention ([batch, seq] mask)": _model([qatt("mask")], base, [x, mask], T.FLOAT),
        "QAttention, key lengths [batch]": _model([qatt("lens")], base, [x, lens], T.FLOAT),
        "QAttention, no mask": _model([qatt("")], base, [x], T.FLOAT),
        "QAttention, mask skipped when all ones (If)": _model(skip_mask, base + [one], [x, mask], T.FLOAT),
        "q/k/v GEMM alone (MatMulIntegerToFloat)": _model([h.make_node(
            "MatMulIntegerToFloat", ["x", "W", "as", "ws", "azp", "", "b"], ["y"], domain="com.microsoft")], base, [x], T.FLOAT),
        "int8 core: GEMM + MatMulInteger QK^T/AV": _model(int8_core, base + core, [x], T.FLOAT),
        "GEMM + MultiHeadAttention, mask": _model([gemm, split, mha(["q", "k", "v", "", "mask"])], base, [x, mask], T.FLOAT),
        "GEMM + MultiHeadAttention, no mask": _model([gemm, split, mha(["q", "k", "v"])], base, [x], T.FLOAT),
    }
    xv = rng.integers(0, 255, (1, seq, D)).astype(np.uint8)
    mv, lv = np.ones((1, seq), np.int32), np.array([seq], np.int32)
    feeds = {k: {"x": xv, **({"mask": mv} if "mask" in k and "no mask" not in k else {}),
                 **({"lens": lv} if "lengths" in k else {})} for k in cases}
    return cases, feeds


def check_mask_forms(sessions, seq: int) -> float:
    """Largest output difference between the [batch, seq] mask and key lengths on a right-padded input."""
    rng = np.random.default_rng(1)
    xv = rng.integers(0, 255, (1, seq, D)).astype(np.uint8)
    n = max(1, seq * 3 // 4)
    m = np.zeros((1, seq), np.int32)
    m[0, :n] = 1
    a = sessions["engine: QAttention ([batch, seq] mask)"].run(None, {"x": xv, "mask": m})[0]
    b = sessions["QAttention, key lengths [batch]"].run(None, {"x": xv, "lens": np.array([n], np.int32)})[0]
    return float(np.abs(a - b)[:, :n].max())


def time_group(sessions, feeds, rounds: int, runs: int = 300) -> dict[str, float]:
    per_round = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            for _ in range(20):
                s.run(None, feeds[k])
            t = []
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, feeds[k])
                t.append(time.perf_counter() - t0)
            per_round[k].append(float(np.median(t)))
    return {k: float(np.median(v)) * 1e6 for k, v in per_round.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq", type=int, default=128)
    a = ap.parse_args()

    import onnxruntime as ort

    from edgeft_runtime.hostinfo import current

    host = current()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.log_severity_level = 3
    rng = np.random.default_rng(0)
    out = {"host": {"cpu": host.cpu, "isa_flags": host.isa_summary()}, "onnxruntime": ort.__version__,
           "threads": a.threads, "seq": a.seq, "rounds": a.rounds, "us": {}}
    print(f"# {host.cpu} [{host.isa_summary()}], ORT {ort.__version__}, {a.threads} threads, b1 s{a.seq}, "
          f"median of {a.rounds} interleaved rounds, µs per call")
    for group, make in (("ffn", ffn_cases), ("attention", attention_cases)):
        cases, feeds = make(a.seq, rng)
        sessions = {k: ort.InferenceSession(v, so, providers=["CPUExecutionProvider"]) for k, v in cases.items()}
        if group == "attention":
            out["mask_forms_max_diff"] = check_mask_forms(sessions, a.seq)
            print(f"  [batch, seq] mask vs key lengths on a right-padded input: max |diff| {out['mask_forms_max_diff']:.3g}")
        res = time_group(sessions, feeds, a.rounds)
        out["us"][group] = res
        print(f"\n## {group}")
        for k, v in res.items():
            print(f"  {v:8.1f}  {k}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
