"""gunicorn settings: `gunicorn --config python:backend.gunicorn_conf`.

Images and Cloud Run serve with `python -m backend` (backend/server.py: slow clients hold no
thread, every answer is JSON, the stop answers every request), and so does the local run
script. This config remains for the assignment-code baseline of the benchmarks and for
whoever runs the app under gunicorn.

- One worker per instance, so one copy of the models in memory; Cloud Run scales by
  adding instances. Threads (gthread) serve concurrent requests; the app bounds how many
  forward passes run at once (INFERENCE_CONCURRENCY) so threads don't oversubscribe cores.
- No preload: models load inside the worker, after fork (ONNX Runtime's thread pools, like
  any threads, do not survive a fork).
- graceful_timeout under Cloud Run's 10 s between SIGTERM and SIGKILL: in-flight requests
  finish, then the worker exits; `worker_exit` stops a model load still in progress.
Values come from the backend's one settings object, so a wrong variable stops the master
with a message naming it, before any worker starts.
"""

import os

from backend.settings import Settings

_settings = Settings.from_env()

wsgi_app = "backend.app:create_production_app()"
bind = f"0.0.0.0:{_settings.port}"
worker_class = "gthread"
workers = 1
threads = _settings.request_threads
preload_app = False
# Loading big models happens in a background thread after the worker is up, so the
# worker heartbeat is never blocked; the timeout only catches a hung worker.
timeout = 120
graceful_timeout = _settings.graceful_timeout_s
keepalive = 5
accesslog = None  # the app logs each request as structured JSON
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# No runtime control socket: nothing administers the server from inside the container,
# and its default path in $HOME would collide between processes on one machine.
control_socket_disable = True
# Cloud Run terminates TLS in front of us; trust its X-Forwarded-* headers.
forwarded_allow_ips = "*"


def worker_exit(server, worker) -> None:
    """In the worker, as it exits (SIGTERM included): end a model load at its next step.

    The loader thread is not a daemon, so the interpreter waits for it; without this it would
    wait for the whole load (or, were it a daemon, tear ONNX Runtime down under it).
    """
    app = getattr(worker, "wsgi", None)
    if app is not None:
        from backend.app import stop_loading

        stop_loading(app)
