# Backend base image: Python, the serving dependencies (ONNX Runtime, no torch), the runtime
# package and the bundles, copied from the bake image (docker/backend-bake.Dockerfile, built
# first and named by BAKE_IMAGE; docs/architecture.md). The code image
# (docker/backend.Dockerfile) adds only the application on top of it.
#
# The layers run from the slowest-changing to the fastest-changing: the venv with the serving
# dependencies, the runtime package, then the bundles, the largest layer, last: a new model set
# re-uploads the bundles and nothing else.
#
# Build arguments have production defaults; tests/containers.py shows the local substitutes.

ARG PYTHON_IMAGE=mirror.gcr.io/library/python:3.11-slim
# The bake image built for this base (required): its /opt/bundles are copied in.
ARG BAKE_IMAGE

FROM ${BAKE_IMAGE} AS bake

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
