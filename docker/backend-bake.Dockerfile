# Backend bake image: Python, CPU-only torch + torchvision + the ONNX exporter. It fetches the
# weights, exports each model to ONNX, verifies it against torchvision and writes a bundle per
# model to /opt/bundles. Only its bundles reach the backend base (docker/backend-base.Dockerfile,
# BAKE_IMAGE); torch and the weights files stay here.
#
# A Dockerfile of its own, not a stage of the base's: Docker's classic builder (Cloud Build's
# docker step) builds every stage of a Dockerfile and, given several --cache-from images,
# follows the first one that matches for the rest of the build. With the bake as a stage of
# the base, the base's previous image and the previous bake could not both serve as cache: a
# dependency change reinstalled torch and exported every model again, and each v3 model after
# the first did too (docs/architecture.md). Built on its own, each build has one cache image.
#
# The layers run from the slowest-changing to the fastest-changing, so that a change
# invalidates as little as possible: the venv (changes with the Python image), torch +
# torchvision (~200 MB CPU wheels; a deliberate upgrade), the other locked bake dependencies
# (uv.lock), the fetched weights (the model set, the catalog, the weights package), then export
# + verify (the bake and runtime packages).
#
# Build arguments have production defaults; tests/containers.py shows the local substitutes.

ARG PYTHON_IMAGE=mirror.gcr.io/library/python:3.11-slim

FROM ${PYTHON_IMAGE} AS bake

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Our own venv rather than the image's interpreter: it works the same on python:3.11-slim and on
# Debian's python3 (which refuses pip outside a venv).
RUN python3 -m venv "${VIRTUAL_ENV}"

WORKDIR /build

# Each ARG is declared just before the first step that uses it: every RUN after an ARG is
# cached by its value, so e.g. a new model set must not come before (and invalidate) torch.

# Optional CA bundle for pip, for local builds behind a TLS-intercepting proxy: bind-mount it
# for the build and name it here (podman build -v BUNDLE:/run/hostca.crt:ro --build-arg
# PIP_CERT=/run/hostca.crt); a bind mount is never stored in a layer. Empty in production:
# pip's own CAs. A build argument rather than a BuildKit secret mount, so this Dockerfile builds
# the same with the classic builder and with BuildKit.
ARG PIP_CERT=""
# Empty TORCH_INDEX_URL: pip's default index (PyPI's CUDA build; runs on a CPU, ~5 GB).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# With the torch index, --no-deps: only the two CPU wheels come from it, and their pure-Python
# dependencies come locked from uv.lock in the next layer (checked there by `pip check`).
COPY docker/requirements-torch.txt /tmp/requirements-torch.txt
RUN if [ -z "${PIP_CERT}" ]; then unset PIP_CERT; fi; \
    if [ -n "${TORCH_INDEX_URL}" ]; then \
        pip install --no-deps --index-url "${TORCH_INDEX_URL}" -r /tmp/requirements-torch.txt; \
    else \
        pip install -r /tmp/requirements-torch.txt; \
    fi

COPY docker/requirements-bake.txt /tmp/requirements-bake.txt
RUN if [ -z "${PIP_CERT}" ]; then unset PIP_CERT; fi; \
    pip install -r /tmp/requirements-bake.txt \
    && pip check

# A set of the catalog (v1, v2, small) or comma-separated model ids.
ARG MODELS=v1
# Optional substitutes for the download sources (empty: torchvision's and the Hub's own).
ARG WEIGHTS_MIRROR=""
ARG HF_ENDPOINT=""
# Optional catalog file, a path inside the image (e.g. /build/weights/<file> of the context).
ARG WEIGHTS_CATALOG=""

# The weights package and the three small runtime modules it uses, not the whole runtime: a
# change to the serving code must not download the weights again.
COPY runtime/__init__.py runtime/files.py runtime/preprocess.py runtime/selection.py /build/runtime/
COPY weights/ /build/weights/
# Empty mirror/endpoint/catalog arguments mean "not set": unset them so nothing reads "".
# With the catalog's lock committed (weights/catalog.lock), the fetch is frozen: every file must
# match its full sha256 pin, of the catalog or the lock, and an unpinned one fails the build.
# Without a lock yet (a fresh clone), the first build still works: files the catalog pins are
# verified in full, the others by torchvision's hash prefix, and the build log prints each pin
# with a warning to commit the lock (README, Weights), after which every build is frozen.
RUN if [ -z "${WEIGHTS_MIRROR}" ]; then unset WEIGHTS_MIRROR; fi; \
    if [ -z "${HF_ENDPOINT}" ]; then unset HF_ENDPOINT; fi; \
    if [ -z "${WEIGHTS_CATALOG}" ]; then unset WEIGHTS_CATALOG; fi; \
    catalog="${WEIGHTS_CATALOG:-/build/weights/catalog.toml}"; lock="${catalog%.toml}.lock"; \
    if [ -f "${lock}" ]; then frozen=--frozen; else frozen=""; \
      echo "warning: no ${lock} committed: unpinned weights are trusted on first download;" \
        "commit the pins printed below (README, Weights) to freeze every later build" >&2; fi; \
    python -m weights fetch ${frozen} --models "${MODELS}" --dest /build/weights-files \
      --no-progress \
    && python -m weights verify --dest /build/weights-files

# Export to ONNX and verify against torchvision, model by model; the build fails here if a
# compiled model does not answer as torchvision's does.
COPY runtime/ /build/runtime/
COPY bake/ /build/bake/
RUN if [ -z "${WEIGHTS_CATALOG}" ]; then unset WEIGHTS_CATALOG; fi; \
    python -m bake --models "${MODELS}" --weights /build/weights-files --dest /opt/bundles
