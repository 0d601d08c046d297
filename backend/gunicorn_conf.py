"""gunicorn settings for Cloud Run: `gunicorn --config python:backend.gunicorn_conf`.

- One worker per instance, so one copy of the models in memory; Cloud Run scales by
  adding instances. Threads (gthread) serve concurrent requests; the app bounds how many
  forward passes run at once (INFERENCE_CONCURRENCY) so threads don't oversubscribe cores.
- No preload: models load inside the worker, after fork (PyTorch can hang in a forked
  child whose parent already started its thread pools).
- graceful_timeout under Cloud Run's 10 s between SIGTERM and SIGKILL: in-flight requests
  finish, then the worker exits.
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
threads = _settings.gunicorn_threads
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
