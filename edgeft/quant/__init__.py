"""Quantization through NVIDIA ModelOpt (fake-quant for QAT/PTQ, exported as ONNX Q/DQ)."""
