# An edgeft bundle for an ONNX Runtime CPU target (x86-64 or arm64: one file, multi-arch base image).
# The build context is the bundle folder (`edgeft package RUN_DIR --docker` puts this file in it as Dockerfile):
#   docker buildx build --platform linux/amd64,linux/arm64 -t my-model BUNDLE_DIR
#   docker run --rm my-model                                   # check: checksums + golden set, exit 0/1
#   docker run --rm my-model predict /bundle "turn on the kitchen lights"
FROM python:3.11-slim
COPY . /bundle
# the runtime wheel pinned by hash, then numpy/onnxruntime/tokenizers (pillow for images) from PyPI for this arch
RUN python -m venv /opt/edgeft \
 && /opt/edgeft/bin/pip install --no-cache-dir --no-index --find-links /bundle/runtime --no-deps --require-hashes -r /bundle/runtime/requirements.txt \
 && /opt/edgeft/bin/pip install --no-cache-dir -r /bundle/runtime/dependencies.txt
ENV PATH=/opt/edgeft/bin:$PATH
RUN useradd --create-home --uid 10001 edgeft
USER 10001
WORKDIR /home/edgeft
ENTRYPOINT ["edgeft-runtime"]
CMD ["check", "/bundle"]
