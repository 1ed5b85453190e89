# An edgeft TensorRT bundle on an x86-64 server with an NVIDIA GPU (NVIDIA's TensorRT image: TensorRT 10.7, CUDA 12.6).
# The build context is the bundle folder (`edgeft package RUN_DIR --docker` puts this file in it as Dockerfile).
# The engine is built from the bundle's kit at the first start and cached in the volume /cache:
#   docker build -t my-model BUNDLE_DIR
#   docker run --rm --gpus all -v edgeft-cache:/cache my-model                       # build once, then check
#   docker run --rm --gpus all -v edgeft-cache:/cache my-model predict /bundle "turn on the lights"
FROM nvcr.io/nvidia/tensorrt:24.12-py3
COPY . /bundle
# python3-venv is not in the image; --system-site-packages: the image's TensorRT Python bindings are used as they are
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv python3-pip \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv --system-site-packages /opt/edgeft \
 && /opt/edgeft/bin/python -c "import tensorrt; print('TensorRT', tensorrt.__version__)" \
 && /opt/edgeft/bin/pip install --no-cache-dir --no-index --find-links /bundle/runtime --no-deps --require-hashes -r /bundle/runtime/requirements.txt \
 && /opt/edgeft/bin/pip install --no-cache-dir -r /bundle/runtime/dependencies.txt
ENV PATH=/opt/edgeft/bin:$PATH EDGEFT_RUNTIME_CACHE=/cache
VOLUME ["/cache"]
ENTRYPOINT ["edgeft-runtime"]
CMD ["check", "/bundle"]
