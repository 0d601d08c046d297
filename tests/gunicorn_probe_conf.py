"""The production gunicorn config, plus a hook: at exit, the worker lists the modules it loaded.

For tests/test_serving.py, which checks that the serving process never imports torch & co.
"""

import json
import os
import sys

from backend import gunicorn_conf as _production
from backend.gunicorn_conf import *  # noqa: F403  # every production setting, unchanged


def worker_exit(server, worker) -> None:
    with open(os.environ["MODULES_FILE"], "w") as out:
        json.dump(sorted(sys.modules), out)
    _production.worker_exit(server, worker)
