"""What runs on the device: numpy + onnxruntime only (no torch, no transformers)."""
