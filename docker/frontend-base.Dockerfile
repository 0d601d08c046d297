# Frontend base image: Python and the locked frontend dependencies (Streamlit, requests,
# google-auth). No torch: the page only talks to the backend over HTTP.
# The code image (docker/frontend.Dockerfile) adds only the application on top of it.
#
# Layers run from the slowest-changing to the fastest-changing: the venv (changes with the
# Python image), then the dependencies (change when uv.lock changes), then the user.

ARG PYTHON_IMAGE=mirror.gcr.io/library/python:3.11-slim
FROM ${PYTHON_IMAGE}

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Our own venv rather than the image's interpreter: it works the same on python:3.11-slim and on
# Debian's python3 (which refuses pip outside a venv).
RUN python3 -m venv "${VIRTUAL_ENV}"

WORKDIR /app

# Optional CA bundle for pip, for local builds behind a TLS-intercepting proxy: bind-mount it
# for the build and name it here (podman build -v BUNDLE:/run/hostca.crt:ro --build-arg
# PIP_CERT=/run/hostca.crt); a bind mount is never stored in a layer. Empty in production:
# pip's own CAs. A build argument rather than a BuildKit secret mount, so this Dockerfile builds
# the same with the classic builder and with BuildKit.
ARG PIP_CERT=""
COPY docker/requirements-frontend.txt /tmp/requirements-frontend.txt
RUN if [ -z "${PIP_CERT}" ]; then unset PIP_CERT; fi; \
    pip install -r /tmp/requirements-frontend.txt \
    && pip check

# Streamlit runs headless and sends no usage statistics: the service makes no call it does not need.
ENV PYTHONPATH=/app \
    STREAMLIT_SERVER_HEADLESS=true \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false

# A non-root user, named by number so the platform can tell it is not root without reading
# /etc/passwd, with a writable HOME whatever sets it: its own home here, and /home itself made
# writable (sticky, like /tmp) because Cloud Run's first-generation environment sets
# HOME=/home, which is root's; libraries that keep state there (Streamlit's ~/.streamlit,
# ~/.cache) would fail otherwise.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin app \
    && chmod 1777 /home
ENV HOME=/home/app
USER 10001:10001
