# Backend base image: Python, CPU-only torch, the locked dependencies and the baked model weights.
# The code image (docker/backend.Dockerfile) adds only the application on top of it.
#
# Layers run from the slowest-changing to the fastest-changing, so that a change invalidates
# as little as possible:
#   1. the venv                        (changes with the Python image)
#   2. torch + torchvision             (~200 MB CPU wheels; change on a deliberate upgrade)
#   3. the other locked dependencies   (change when uv.lock changes)
#   4. the weights package + weights   (up to ~1.5 GB; change with the model set, the catalog
#                                       or the weights package's code)
# The weights come last although they are the largest layer: they change more often than
# torch (a model added to a set), and putting them after the dependencies means such a change
# re-downloads only the weights, while a dependency bump re-downloads both (the price of the
# weights being last is paid rarely; the reverse order would pay torch on every model change).
#
# Build arguments have production defaults; containers.md shows the local substitutes.

ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Our own venv rather than the image's interpreter: it works the same on python:3.11-slim and on
# Debian's python3 (which refuses pip outside a venv), and the app never sees the system site.
RUN python3 -m venv "${VIRTUAL_ENV}"

WORKDIR /app

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

COPY docker/requirements-backend.txt /tmp/requirements-backend.txt
RUN if [ -z "${PIP_CERT}" ]; then unset PIP_CERT; fi; \
    pip install -r /tmp/requirements-backend.txt \
    && pip check

# A set of the catalog (v1, v2, small) or comma-separated model ids.
ARG MODELS=v1
# Optional substitutes for the download sources (empty: torchvision's and the Hub's own).
ARG WEIGHTS_MIRROR=""
ARG HF_ENDPOINT=""
# Optional catalog file, a path inside the image (e.g. weights/<file> of the build context).
ARG WEIGHTS_CATALOG=""

# Only the weights package: a change to the backend's code must not invalidate this layer.
COPY weights/ /app/weights/
# Empty mirror/endpoint/catalog arguments mean "not set": unset them so nothing reads "".
RUN if [ -z "${WEIGHTS_MIRROR}" ]; then unset WEIGHTS_MIRROR; fi; \
    if [ -z "${HF_ENDPOINT}" ]; then unset HF_ENDPOINT; fi; \
    if [ -z "${WEIGHTS_CATALOG}" ]; then unset WEIGHTS_CATALOG; fi; \
    python -m weights fetch --models "${MODELS}" --dest /opt/weights --no-progress \
    && python -m weights verify --dest /opt/weights \
    && python -m compileall -q /app/weights

# Runtime: serve only what was baked, never download (HF_HUB_OFFLINE makes the Hub client
# fail fast instead of reaching out). MODELS stays what was baked unless a deploy overrides it,
# and the service reads the catalog the weights were fetched with (empty: the built-in one).
ENV PYTHONPATH=/app \
    WEIGHTS_DIR=/opt/weights \
    MODELS=${MODELS} \
    WEIGHTS_CATALOG=${WEIGHTS_CATALOG} \
    HF_HUB_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1

# A non-root user, named by number so the platform can tell it is not root without reading
# /etc/passwd; it gets a home so libraries that want ~/.cache find a writable one.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin app
USER 10001:10001
