# Backend base image, in two stages (docs/architecture.md):
#   bake     Python, CPU-only torch + torchvision + the ONNX exporter: fetch the weights, export
#            each model to ONNX, verify it against torchvision, write a bundle per model.
#            Thrown away after the build, all but its bundles.
#   runtime  (the image) Python, the serving dependencies (ONNX Runtime, no torch), the
#            runtime package and the bundles.
# The code image (docker/backend.Dockerfile) adds only the application on top of it.
#
# In each stage the layers run from the slowest-changing to the fastest-changing, so that a
# change invalidates as little as possible. bake: the venv (changes with the Python image),
# torch + torchvision (~200 MB CPU wheels; a deliberate upgrade), the other locked bake
# dependencies (uv.lock), the fetched weights (the model set, the catalog, the weights
# package), then export + verify (the bake and runtime packages). runtime: the venv with the
# serving dependencies, the runtime package, then the bundles, the largest layer, last: a new
# model set re-uploads the bundles and nothing else.
#
# Build arguments have production defaults; tests/containers.py shows the local substitutes.

ARG PYTHON_IMAGE=mirror.gcr.io/library/python:3.11-slim

# --- bake --------------------------------------------------------------------------------------
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

# --- runtime (the base image) --------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The venv and the serving dependencies in one layer, then pip itself out of it: nothing
# installs at run time, and pip with setuptools is 26 MB of the image's ~350 MB without models
# (removed in a later layer, it would still be shipped in this one).
ARG PIP_CERT=""
COPY docker/requirements-backend.txt /tmp/requirements-backend.txt
RUN if [ -z "${PIP_CERT}" ]; then unset PIP_CERT; fi; \
    python3 -m venv "${VIRTUAL_ENV}" \
    && pip install -r /tmp/requirements-backend.txt \
    && pip check \
    && pip uninstall --yes --quiet pip setuptools

# The runtime package, root-owned and compiled here so a cold start does not compile it.
COPY runtime/ /app/runtime/
RUN python -m compileall -q /app/runtime

# Nothing of the bake stage reaches this image but its bundles: no torch, no weights files.
COPY --from=bake /opt/bundles /opt/bundles

# Serve what was baked (every bundle unless a deploy sets MODELS), never download anything.
ENV PYTHONPATH=/app \
    BUNDLES_DIR=/opt/bundles

# A non-root user, named by number so the platform can tell it is not root without reading
# /etc/passwd, with a writable HOME whatever sets it: its own home here, and /home itself made
# writable (sticky, like /tmp) because Cloud Run's first-generation environment sets
# HOME=/home, which is root's; libraries that keep state there (Streamlit's ~/.streamlit,
# ~/.cache) would fail otherwise.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin app \
    && chmod 1777 /home
ENV HOME=/home/app
USER 10001:10001
