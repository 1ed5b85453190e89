# An edgeft TensorRT bundle on NVIDIA Jetson (JetPack 6.1+, L4T r36.4, TensorRT 10.3 with its Python bindings).
# The build context is the bundle folder (`edgeft package RUN_DIR --docker` puts this file in it as Dockerfile).
# The engine is built from the bundle's kit at the first start and cached in the volume /cache:
#   docker build -t my-model BUNDLE_DIR
#   docker run --rm --runtime nvidia -v edgeft-cache:/cache my-model                 # build once, then check
#   docker run --rm --runtime nvidia -v edgeft-cache:/cache my-model predict /bundle "turn on the lights"
FROM nvcr.io/nvidia/l4t-jetpack:r36.4.0
COPY . /bundle
# python3-venv is not in the image; --system-site-packages: TensorRT's Python bindings come with JetPack
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
