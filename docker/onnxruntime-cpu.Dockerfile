# Device image for ONNX Runtime CPU targets (x86-avx512-int8 and other onnxruntime-cpu targets; builds
# for arm64 too with `--platform linux/arm64`). Holds one compiled engine and the torch-free runtime:
# numpy + onnxruntime + tokenizers (text) or pillow (images), nothing else (no torch, no transformers).
#
# Build from the repository root, naming the engine folder a run produced:
#   docker build -f docker/onnxruntime-cpu.Dockerfile \
#     --build-arg ENGINE=runs/all-MiniLM-L6-v2-smarthome/compile/x86-avx512-int8/engine -t edgeft-ort .
# Use:
#   docker run --rm edgeft-ort "turn on the kitchen lights"                       # classify
#   docker run --rm --entrypoint python edgeft-ort -m edgeft.runtime.latency /engine --shape input_ids=1x128
FROM python:3.11-slim
ARG ENGINE
RUN pip install --no-cache-dir "numpy>=1.26" "onnxruntime>=1.20" "tokenizers>=0.20" "pillow>=10"
WORKDIR /opt/edgeft
COPY edgeft/__init__.py edgeft/fileio.py edgeft/
COPY edgeft/runtime edgeft/runtime
COPY ${ENGINE} /engine
ENV PYTHONPATH=/opt/edgeft
ENTRYPOINT ["python", "-m", "edgeft.runtime.predict", "/engine"]
