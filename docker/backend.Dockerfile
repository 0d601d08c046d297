# Backend code image: the application on top of the base of the same build (dependencies and
# weights already baked there), so a code change rebuilds and pushes only these small layers.
# Started with no network access and no download: everything it serves is in the base.

ARG BASE_IMAGE_URI
FROM ${BASE_IMAGE_URI}

# Code only, root-owned so the service's user cannot change it; compiled here (as root, the
# only user that may write next to it) so a cold start does not pay for compiling.
USER 0:0
COPY backend/ /app/backend/
RUN python -m compileall -q /app/backend
USER 10001:10001

# Cloud Run sets PORT (8080 unless told otherwise); the deploy scripts pass --port 8080 too.
ENV PORT=8080
EXPOSE 8080

# Exec form: the server is PID 1 and receives SIGTERM directly, so it answers the requests in
# flight within Cloud Run's 10 s grace period (backend/__main__.py). It binds 0.0.0.0:$PORT.
CMD ["python", "-m", "backend"]
