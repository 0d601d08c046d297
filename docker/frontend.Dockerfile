# Frontend code image: the Streamlit page on top of the base of the same build.

ARG BASE_IMAGE_URI
FROM ${BASE_IMAGE_URI}

# Code only, root-owned so the service's user cannot change it; compiled here (as root, the
# only user that may write next to it) so a cold start does not pay for compiling.
USER 0:0
COPY frontend/ /app/frontend/
# The image-size limit the page shares with the backend and the gateway (standard library only).
COPY runtime/__init__.py runtime/limits.py runtime/timing.py /app/runtime/
RUN python -m compileall -q /app/frontend /app/runtime
USER 10001:10001

# Cloud Run sets PORT (8080 unless told otherwise); `python -m frontend` serves on it.
ENV PORT=8080
EXPOSE 8080

# Exec form: the Python process is PID 1 and receives SIGTERM directly.
CMD ["python", "-m", "frontend"]
